"""tinygrad_cnn: a small, readable, fast autodiff framework on NumPy.

>>> from tinygrad_cnn import Tensor
>>> x = Tensor([2.0, 3.0], requires_grad=True)
>>> y = (x * x).sum()
>>> y.backward()
>>> x.grad
array([4., 6.], dtype=float32)
"""

from . import functional
from .autograd import Function, enable_grad, is_grad_enabled, no_grad
from .ops.conv import col2im, conv_output_size, im2col
from .parallel import threads
from .tensor import Tensor

__version__ = "0.1.0"

__all__ = [
    "Tensor",
    "Function",
    "functional",
    "no_grad",
    "enable_grad",
    "is_grad_enabled",
    "im2col",
    "col2im",
    "conv_output_size",
    "threads",
]
