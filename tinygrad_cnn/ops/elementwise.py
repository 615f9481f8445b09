"""Elementwise ops. Binary ops broadcast like NumPy; the engine sums gradients back down."""

from __future__ import annotations

import functools

import numpy as np

from .. import parallel
from ..autograd import Function, memory_order, workspace


class BinaryOp(Function, register=False):
    """Base for broadcasting binary ops: turns a shape mismatch into a clear ValueError."""

    def forward(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        # An integer (or bool) operand takes the float operand's dtype, as in PyTorch: NumPy
        # would turn int64 with float32 into float64, a silent upcast.
        if a.dtype.kind in "iub" and b.dtype.kind == "f":
            a = a.astype(b.dtype)
        elif b.dtype.kind in "iub" and a.dtype.kind == "f":
            b = b.astype(a.dtype)
        try:
            return self.compute(a, b)
        except ValueError:
            raise ValueError(
                f"{self.name.lower()}: operands with shapes {a.shape} and {b.shape} cannot be "
                "broadcast together"
            ) from None

    def compute(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class Add(BinaryOp):
    def compute(self, a, b):
        return a + b

    def backward(self, gy):
        return gy, gy

    def backward_graph(self, gy):
        return gy, gy


class Sub(BinaryOp):
    def compute(self, a, b):
        return a - b

    def backward(self, gy):
        return gy, (-gy if self.needs_input_grad[1] else None)

    def backward_graph(self, gy):
        return gy, (-gy if self.needs_input_grad[1] else None)


class Mul(BinaryOp):
    def compute(self, a, b):
        self.save(a=a, b=b)
        return a * b

    def backward(self, gy):
        a, b = self.saved["a"], self.saved["b"]
        ga = gy * b if self.needs_input_grad[0] else None
        gb = gy * a if self.needs_input_grad[1] else None
        return ga, gb

    def backward_graph(self, gy):
        a, b = self.parents
        need = self.needs_input_grad
        return (gy * b if need[0] else None), (gy * a if need[1] else None)


class Div(BinaryOp):
    def compute(self, a, b):
        self.save(a=a, b=b)
        return a / b

    def backward(self, gy):
        a, b = self.saved["a"], self.saved["b"]
        ga = gy / b if self.needs_input_grad[0] else None
        gb = -gy * a / (b * b) if self.needs_input_grad[1] else None
        return ga, gb

    def backward_graph(self, gy):
        a, b = self.parents
        need = self.needs_input_grad
        return (gy / b if need[0] else None), (-gy * a / (b * b) if need[1] else None)


class Neg(Function):
    def forward(self, x):
        return -x

    def backward(self, gy):
        return -gy

    def backward_graph(self, gy):
        return -gy


class Pow(Function):
    """``x ** exponent`` for a Python-number exponent."""

    attr_names = ("exponent",)
    exponent: float

    def forward(self, x):
        self.save(x=x)
        return x**self.exponent

    def backward(self, gy):
        x = self.saved["x"]
        p = self.exponent
        return gy * (p * x ** (p - 1))

    def backward_graph(self, gy):
        (x,) = self.parents
        p = self.exponent
        return gy * (x ** (p - 1) * p)


class Exp(Function):
    def forward(self, x):
        y = np.exp(x)
        self.save(y=y)
        return y

    def backward(self, gy):
        return gy * self.saved["y"]

    def backward_graph(self, gy):
        (x,) = self.parents
        return gy * Exp.apply(x)


class Log(Function):
    def forward(self, x):
        self.save(x=x)
        return np.log(x)

    def backward(self, gy):
        return gy / self.saved["x"]

    def backward_graph(self, gy):
        (x,) = self.parents
        return gy / x


class ReLU(Function):
    """max(x, 0); the gradient at exactly 0 is taken as 0. Keeps x's memory order."""

    def forward(self, x):
        # Against an array of zeros, np.maximum runs its SIMD loop; against the scalar 0 it
        # takes a slower scalar loop (2x here). ``_zeros`` costs no memory (see there).
        order = memory_order(x)  # zeros in x's memory order, so both walk the same strides
        zeros = _zeros(tuple(x.shape[d] for d in order), x.dtype).transpose(np.argsort(order))
        y = workspace.empty_like(x)
        if not self.needs_input_grad[0]:
            parallel.elementwise(lambda x, z, y: np.maximum(x, z, out=y), x, zeros, y)
            return y
        mask = workspace.empty_like(x, dtype=bool)
        parallel.elementwise(_relu_and_mask, x, zeros, y, mask)
        self.save(mask=mask)
        return y

    def kinks(self, x, margin):
        return [np.abs(x) <= margin]

    def backward(self, gy):
        mask = self.saved["mask"]
        gx = workspace.empty_like(mask, dtype=gy.dtype)
        parallel.elementwise(lambda g, m, out: np.multiply(g, m, out=out), gy, mask, gx)
        return gx

    def backward_graph(self, gy):
        # The mask is constant where ReLU is differentiable: its second derivative is 0.
        return gy * self.saved["mask"].astype(gy.dtype)


def _relu_and_mask(x: np.ndarray, zeros: np.ndarray, y: np.ndarray, mask: np.ndarray) -> None:
    np.maximum(x, zeros, out=y)
    np.greater(x, 0, out=mask)


@functools.lru_cache(maxsize=8)
def _zeros(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A read-only array of zeros. ``np.zeros`` maps untouched pages to the OS's one shared
    zero page, so it takes no memory however large, and reading it always hits the cache."""
    z = np.zeros(shape, dtype)
    z.flags.writeable = False
    return z


class Sigmoid(Function):
    def forward(self, x):
        # 0.5 * (1 + tanh(x / 2)) never overflows, unlike 1 / (1 + exp(-x)).
        y = np.tanh(x * 0.5)
        y += 1
        y *= 0.5
        self.save(y=y)
        return y

    def backward(self, gy):
        y = self.saved["y"]
        return gy * y * (1 - y)

    def backward_graph(self, gy):
        (x,) = self.parents
        y = Sigmoid.apply(x)
        return gy * y * (1 - y)


class Tanh(Function):
    def forward(self, x):
        y = np.tanh(x)
        self.save(y=y)
        return y

    def backward(self, gy):
        y = self.saved["y"]
        return gy * (1 - y * y)

    def backward_graph(self, gy):
        (x,) = self.parents
        y = Tanh.apply(x)
        return gy * (1 - y * y)
