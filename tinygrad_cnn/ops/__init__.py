"""Every differentiable op, one class each; importing this package registers them all."""

from . import adjoint, conv, elementwise, linalg, loss, pool, shape  # noqa: F401
from .conv import col2im, conv_output_size, im2col  # noqa: F401
