"""tinygrad_cnn: a small, readable, fast autodiff framework on NumPy.

>>> from tinygrad_cnn import Tensor
>>> x = Tensor([2.0, 3.0], requires_grad=True)
>>> y = (x * x).sum()
>>> y.backward()
>>> x.grad
array([4., 6.], dtype=float32)
"""

from . import functional
from .anomaly import AnomalyError, detect_anomaly
from .autograd import (
    Function,
    RemovableHandle,
    enable_grad,
    is_grad_enabled,
    no_grad,
    on_op_backward,
    on_op_created,
)
from .backprop import grad
from .ops.conv import conv_output_size
from .ops.im2col import col2im, im2col
from .parallel import threads
from .tensor import Tensor

__version__ = "0.1.0"

__all__ = [
    "Tensor",
    "Function",
    "RemovableHandle",
    "functional",
    "grad",
    "on_op_created",
    "on_op_backward",
    "detect_anomaly",
    "AnomalyError",
    "no_grad",
    "enable_grad",
    "is_grad_enabled",
    "im2col",
    "col2im",
    "conv_output_size",
    "threads",
]
