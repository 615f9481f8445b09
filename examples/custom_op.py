"""Define your own op (leaky ReLU) and property-test its gradient like the built-in ops.

    python examples/custom_op.py

Subclassing ``Function`` registers the op. ``forward`` and ``backward`` work on plain
NumPy arrays; ``backward`` returns one gradient per input.
"""

import numpy as np
from hypothesis import given, settings

from tinygrad_cnn import Function, Tensor
from tinygrad_cnn import strategies as tst
from tinygrad_cnn.testing import check_vjp, gradcheck


class LeakyReLU(Function):
    """x if x > 0 else slope * x."""

    attr_names = ("slope",)

    def forward(self, x):
        self.save(positive=x > 0)
        return np.where(x > 0, x, x * self.slope)

    def backward(self, gy):
        return np.where(self.saved["positive"], gy, gy * self.slope)


def leaky_relu(x: Tensor, slope: float = 0.01) -> Tensor:
    return LeakyReLU.apply(x, slope=slope)


# Inputs are drawn away from the kink at 0, where finite differences are meaningless.
@settings(max_examples=50, deadline=None)
@given(x=tst.away_from_zero(tst.shapes(max_dims=3)))
def test_leaky_relu_gradient(x):
    assert gradcheck(lambda t: leaky_relu(t, 0.1), Tensor(x, requires_grad=True))


if __name__ == "__main__":
    print("registered:", "LeakyReLU" in Function.registry)
    test_leaky_relu_gradient()  # hypothesis runs 50 random cases
    print("gradcheck passed on 50 hypothesis-drawn inputs")
    big = Tensor(np.random.default_rng(0).standard_normal((100, 4320)), requires_grad=True)
    print(f"dot-product test at (100, 4320): relative error {check_vjp(leaky_relu, big):.1e}")
