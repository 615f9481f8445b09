"""Every differentiable op, one class each; importing this package registers them all."""

from . import (  # noqa: F401
    activations,
    adjoint,
    conv,
    elementwise,
    join,
    linalg,
    loss,
    norm,
    pool,
    select,
    shape,
)
from .conv import conv_output_size  # noqa: F401
from .im2col import col2im, im2col  # noqa: F401
