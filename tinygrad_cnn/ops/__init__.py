"""Every differentiable op, one class each; importing this package registers them all."""

from . import (  # noqa: F401
    activations,
    adjoint,
    conv,
    elementwise,
    join,
    linalg,
    loss,
    pool,
    select,
    shape,
)
from .conv import col2im, conv_output_size, im2col  # noqa: F401
