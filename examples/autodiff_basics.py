"""Build a small expression, call backward, read the gradients.

python examples/autodiff_basics.py
"""

import numpy as np

from tinygrad_cnn import Tensor, no_grad

# f(a, b) = sum(tanh(a * b) + a ** 2) / 2, for a (2, 3) and a broadcast b (3,)
a = Tensor(np.array([[0.5, -1.0, 2.0], [1.5, 0.0, -0.5]], np.float32), requires_grad=True, name="a")
b = Tensor(np.array([1.0, 2.0, -1.0], np.float32), requires_grad=True, name="b")
f = ((a * b).tanh() + a**2).sum() / 2

f.backward()
print("f      =", f.item())
print("df/da  =\n", a.grad)
print("df/db  =", b.grad, "(summed over the broadcast rows)")

# by hand: df/da = (b * (1 - tanh(ab)^2) + 2a) / 2 and df/db = sum_rows(a * (1 - tanh(ab)^2)) / 2
t = np.tanh(a.data * b.data)
assert np.allclose(a.grad, (b.data * (1 - t**2) + 2 * a.data) / 2, atol=1e-6)
assert np.allclose(b.grad, (a.data * (1 - t**2)).sum(axis=0) / 2, atol=1e-6)
print("matches the hand-derived gradients; dtype stays", a.grad.dtype)

with no_grad():  # nothing is recorded here, e.g. for evaluation
    g = (a * b).sum()
print("under no_grad: requires_grad =", g.requires_grad)
