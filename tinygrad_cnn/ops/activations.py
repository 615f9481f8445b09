"""Unary elementwise math and activations: abs, sqrt, sin, cos, log1p, erf, clip, leaky_relu,
elu, gelu (exact and tanh forms), softplus.

Each keeps its input's dtype: constants are Python floats, which never upcast float32.
Ops with a kink (abs at 0, clip at its bounds, leaky_relu/elu at 0) declare it in ``kinks``;
their second derivative is zero away from it, so ``backward_graph`` multiplies by a constant
mask, as ReLU does.
"""

from __future__ import annotations

import math

import numpy as np

from ..autograd import Function
from .elementwise import Exp, Sigmoid, Tanh

SQRT_2 = math.sqrt(2.0)
SQRT_2PI = math.sqrt(2.0 * math.pi)
TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
GELU_C = math.sqrt(2.0 / math.pi)  # the tanh form: tanh(GELU_C * (x + GELU_A * x**3))
GELU_A = 0.044715


def erf(x: np.ndarray) -> np.ndarray:
    """The error function, elementwise, to about 1e-15 (NumPy has none).

    |x| <= 3: ``2/sqrt(pi) exp(-x^2) sum_n 2^n x^(2n+1) / (2n+1)!!`` (positive terms, no
    cancellation); |x| > 3: ``1 - erfc`` with erfc from its continued fraction. Computed in
    float64 and returned in ``x``'s floating dtype, at least float32 (float16 and integer
    input give float32 and float64, as ``np.result_type(x, np.float32)``).
    """
    a = np.abs(np.asarray(x, dtype=np.float64))
    out = np.empty_like(a)
    small = a <= 3.0
    s = a[small]
    term, total, s2 = s.copy(), s.copy(), 2.0 * s * s
    for n in range(1, 90):  # at |x| = 3 the terms peak near n = 8 and vanish well before 90
        term *= s2 / (2 * n + 1)
        total += term
    out[small] = TWO_OVER_SQRT_PI * np.exp(-s * s) * total
    z = a[~small]
    cf = np.zeros_like(z)
    for k in range(60, 0, -1):  # erfc(z) = exp(-z^2)/sqrt(pi) / (z + (1/2)/(z + 1/(z + ...)))
        cf = (k / 2.0) / (z + cf)
    out[~small] = 1.0 - np.exp(-z * z) / math.sqrt(math.pi) / (z + cf)
    return (np.sign(x) * out).astype(np.result_type(x, np.float32), copy=False)


class Abs(Function):
    """|x|; the gradient at exactly 0 is 0 (as PyTorch's)."""

    def forward(self, x):
        self.save(sign=np.sign(x))
        return np.abs(x)

    def kinks(self, x, margin):
        return [np.abs(x) <= margin]

    def backward(self, gy):
        return gy * self.saved["sign"]

    def backward_graph(self, gy):
        return gy * self.saved["sign"].astype(gy.dtype)


class Sqrt(Function):
    def forward(self, x):
        y = np.sqrt(x)
        self.save(y=y)
        return y

    def backward(self, gy):
        return gy / (2 * self.saved["y"])

    def backward_graph(self, gy):
        (x,) = self.parents
        return gy / (2 * Sqrt.apply(x))


class Sin(Function):
    def forward(self, x):
        self.save(x=x)
        return np.sin(x)

    def backward(self, gy):
        return gy * np.cos(self.saved["x"])

    def backward_graph(self, gy):
        (x,) = self.parents
        return gy * Cos.apply(x)


class Cos(Function):
    def forward(self, x):
        self.save(x=x)
        return np.cos(x)

    def backward(self, gy):
        return -gy * np.sin(self.saved["x"])

    def backward_graph(self, gy):
        (x,) = self.parents
        return -gy * Sin.apply(x)


class Log1p(Function):
    """``log(1 + x)``, exact for tiny x."""

    def forward(self, x):
        self.save(x=x)
        return np.log1p(x)

    def backward(self, gy):
        return gy / (1 + self.saved["x"])

    def backward_graph(self, gy):
        (x,) = self.parents
        return gy / (1 + x)


class Erf(Function):
    def forward(self, x):
        self.save(x=x)
        return erf(x)

    def backward(self, gy):
        x = self.saved["x"]
        return gy * (TWO_OVER_SQRT_PI * np.exp(-x * x))

    def backward_graph(self, gy):
        (x,) = self.parents
        return gy * (Exp.apply(-(x * x)) * TWO_OVER_SQRT_PI)


class Clip(Function):
    """x limited to ``[low, high]`` (either may be None); the gradient passes where
    ``low <= x <= high``, bounds included, as in PyTorch."""

    attr_names = ("low", "high")
    low: float | None
    high: float | None

    def forward(self, x):
        y = np.clip(x, self.low, self.high)
        inside = np.ones(x.shape, bool)
        if self.low is not None:
            inside &= x >= self.low
        if self.high is not None:
            inside &= x <= self.high
        self.save(inside=inside)
        return y.astype(x.dtype, copy=False)

    def kinks(self, x, margin):
        near = np.zeros(x.shape, bool)
        for bound in (self.low, self.high):
            if bound is not None:
                near |= np.abs(x - bound) <= margin
        return [near]

    def backward(self, gy):
        return gy * self.saved["inside"]

    def backward_graph(self, gy):
        return gy * self.saved["inside"].astype(gy.dtype)


class LeakyReLU(Function):
    """x where x > 0, ``negative_slope * x`` elsewhere (the slope is used at exactly 0)."""

    attr_names = ("negative_slope",)
    negative_slope: float

    def forward(self, x):
        slope = np.where(x > 0, 1.0, self.negative_slope).astype(x.dtype)
        self.save(slope=slope)
        return x * slope

    def kinks(self, x, margin):
        return [np.abs(x) <= margin]

    def backward(self, gy):
        return gy * self.saved["slope"]

    def backward_graph(self, gy):
        return gy * self.saved["slope"].astype(gy.dtype)


class ELU(Function):
    """x where x > 0, ``alpha * (exp(x) - 1)`` elsewhere."""

    attr_names = ("alpha",)
    alpha: float

    def forward(self, x):
        pos = x > 0
        em1 = np.expm1(np.minimum(x, 0))  # never overflows
        self.save(pos=pos, em1=em1)
        return np.where(pos, x, self.alpha * em1)

    def kinks(self, x, margin):
        return [np.abs(x) <= margin]

    def backward(self, gy):
        pos, em1 = self.saved["pos"], self.saved["em1"]
        return gy * np.where(pos, 1.0, self.alpha * (em1 + 1)).astype(em1.dtype)

    def backward_graph(self, gy):
        (x,) = self.parents
        pos = self.saved["pos"].astype(gy.dtype)
        # where x <= 0 the slope alpha * exp(x) is exp's; the mask is constant off the kink
        return gy * (pos + (1 - pos) * self.alpha * Exp.apply(x * (1 - pos)))


class GELU(Function):
    """``x * Phi(x)`` (Phi the standard normal CDF), or its tanh approximation
    ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`` when ``approximate == "tanh"``."""

    attr_names = ("approximate",)
    approximate: str

    def forward(self, x):
        self.save(x=x)
        if self.approximate == "tanh":
            return 0.5 * x * (1 + np.tanh(GELU_C * (x + GELU_A * x**3)))
        return 0.5 * x * (1 + erf(x / SQRT_2))

    def backward(self, gy):
        x = self.saved["x"]
        if self.approximate == "tanh":
            t = np.tanh(GELU_C * (x + GELU_A * x**3))
            du = GELU_C * (1 + 3 * GELU_A * x * x)
            return gy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du)
        cdf = 0.5 * (1 + erf(x / SQRT_2))
        return gy * (cdf + x * np.exp(-0.5 * x * x) / SQRT_2PI)

    def backward_graph(self, gy):
        (x,) = self.parents
        if self.approximate == "tanh":
            t = Tanh.apply((x + x**3 * GELU_A) * GELU_C)
            du = (1 + x * x * (3 * GELU_A)) * GELU_C
            return gy * ((1 + t) * 0.5 + x * 0.5 * (1 - t * t) * du)
        cdf = (1 + Erf.apply(x / SQRT_2)) * 0.5
        return gy * (cdf + x * Exp.apply(x * x * -0.5) / SQRT_2PI)


class Softplus(Function):
    """``log(1 + exp(beta x)) / beta``, computed as ``max(x, 0) + log1p(exp(-beta |x|)) / beta``
    (never overflows); its derivative is ``sigmoid(beta x)``."""

    attr_names = ("beta",)
    beta: float

    def forward(self, x):
        self.save(x=x)
        return np.maximum(x, 0) + np.log1p(np.exp(-self.beta * np.abs(x))) / self.beta

    def backward(self, gy):
        return gy * Sigmoid().forward(self.beta * self.saved["x"])

    def backward_graph(self, gy):
        (x,) = self.parents
        return gy * Sigmoid.apply(x * self.beta)
