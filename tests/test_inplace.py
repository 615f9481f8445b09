"""In-place writes to arrays saved for backward are caught at backward, naming op and tensor."""

from __future__ import annotations

import numpy as np
import pytest

import tinygrad_cnn.functional as F
from tinygrad_cnn import Tensor
from tinygrad_cnn.models import SimpleConvNet
from tinygrad_cnn.optim import SGD


def pair() -> tuple[Tensor, Tensor]:
    a = Tensor(np.array([1.0, 2.0]), requires_grad=True, name="a")
    b = Tensor(np.array([3.0, 4.0]), requires_grad=True, name="b")
    return a, b


WRITES = {
    "setitem": lambda d: d.__setitem__(Ellipsis, 0),
    "slice": lambda d: d[1:].__setitem__(Ellipsis, 0),
    "iadd": lambda d: d.__iadd__(1),
    "ufunc out": lambda d: np.multiply(d, 2, out=d),
    "fill": lambda d: d.fill(0),
    "copyto": lambda d: np.copyto(d, 5.0),
    "reshaped view": lambda d: d.reshape(2, 1).__setitem__(Ellipsis, 0),
}


@pytest.mark.parametrize("write", WRITES.values(), ids=WRITES.keys())
def test_writing_a_saved_input_then_backward_names_the_op_and_the_tensor(write):
    a, b = pair()
    y = (a * b).sum()
    write(b.data)
    with pytest.raises(RuntimeError, match=r"input 1 of Mul \(tensor 'b', shape \(2,\)\) was "
                       r"changed in place after Mul saved it"):  # fmt: skip
        y.backward()
    assert a.grad is None and b.grad is None


def test_the_issue_example_no_longer_gives_silently_wrong_gradients():
    a, b = pair()
    y = (a * b).sum()
    b.data[...] = 0
    with pytest.raises(RuntimeError, match="changed in place"):
        y.backward()


def test_writing_a_saved_output_is_caught_too():
    x = Tensor(np.array([0.5, 1.0]), requires_grad=True)
    y = x.exp()  # Exp saves its output
    y.data[0] = 100.0
    with pytest.raises(RuntimeError, match="output of Exp was changed in place"):
        y.sum().backward()


def test_reading_and_writes_after_backward_or_to_unsaved_inputs_are_fine():
    a, b = pair()
    y = (a * b).sum()
    total = float(b.data.sum()) + float((b.data * 2).sum())  # reads and new arrays
    copy = b.data.copy()
    copy[...] = 0  # a copy is the user's own array
    y.backward()
    b.data[...] = 0  # after backward the graph is gone
    np.testing.assert_array_equal(a.grad, [3.0, 4.0])
    assert total == 21.0
    c = Tensor(np.ones(2), requires_grad=True)
    z = (c + a).sum()  # Add saves nothing, so writing c cannot corrupt its backward
    c.data[...] = 7
    z.backward()
    np.testing.assert_array_equal(c.grad, [1.0, 1.0])


def test_an_optimizer_step_between_forward_and_backward_is_caught():
    net = SimpleConvNet((1, 8, 8), {"filter_num": 2, "filter_size": 3}, 4, 3, seed=0)
    opt = SGD(net.parameters(), lr=0.1)
    x, t = np.random.default_rng(0).random((2, 1, 8, 8), dtype=np.float32), [0, 1]
    net.loss(x, t).backward()
    loss = net.loss(x, t)
    opt.step()  # updates the weights the new graph saved
    with pytest.raises(RuntimeError, match="changed in place"):
        loss.backward()


def test_data_is_a_plain_looking_array_with_plain_results():
    t = Tensor(np.arange(6.0).reshape(2, 3))
    d = t.data
    assert repr(d).startswith("array(") and d is t.data
    assert type(d * 2) is np.ndarray and type(d.copy()) is np.ndarray
    assert type(d.sum(axis=0)) is np.ndarray and type(np.concatenate([d, d])) is np.ndarray
    d += 1  # stays the tracked view after an in-place operator
    assert d is t.data and t.data[0, 0] == 1.0


def test_ops_that_save_derived_arrays_are_checked_conservatively():
    x = Tensor(np.array([[-1.0, 2.0]]), requires_grad=True)
    y = F.relu(x).sum()
    x.data[...] = 5.0
    with pytest.raises(RuntimeError, match="ReLU"):
        y.backward()
