"""The workspace (buffer reuse): an array is handed out again only when nobody else holds it,
so reuse never changes a result: outputs users keep, saved arrays of graphs not yet
backpropagated and leaf gradients all survive later steps."""

from __future__ import annotations

import numpy as np
import pytest

import tinygrad_cnn.functional as F
from tinygrad_cnn import Tensor, autograd, on_op_backward
from tinygrad_cnn.nn import SimpleConvNet
from tinygrad_cnn.optim import Adam
from tinygrad_cnn.workspace import Workspace, workspace

BIG = (64, 1024)  # 256 KiB of float32: pooled
pytestmark = pytest.mark.skipif(not workspace.enabled, reason="needs CPython reference counts")


def test_a_buffer_is_reused_only_once_released():
    ws = Workspace()
    a = ws.empty(BIG, np.float32)
    b = ws.empty(BIG, np.float32)
    assert not np.shares_memory(a, b)
    address = a.ctypes.data
    del a
    c = ws.empty(BIG, np.float32)
    assert c.ctypes.data == address
    assert ws.allocations == 2


def test_a_view_keeps_its_buffer_in_use():
    ws = Workspace()
    a = ws.empty(BIG, np.float32)
    view = a[1:].T
    del a
    b = ws.empty(BIG, np.float32)
    assert not np.shares_memory(view, b)


def test_keys_are_shape_and_dtype_and_small_arrays_are_not_pooled():
    ws = Workspace(min_bytes=1024)
    a = ws.empty(BIG, np.float32)
    address = a.ctypes.data
    del a
    assert ws.empty(BIG, np.float64).ctypes.data != address
    assert ws.empty(BIG[::-1], np.float32).ctypes.data != address
    ws.empty((4,), np.float32)
    assert ws.nbytes == (4 + 8 + 4) * BIG[0] * BIG[1]  # the float32, float64 and (1024, 64)


def test_the_byte_budget_is_respected_and_clear_forgets():
    ws = Workspace(max_bytes=4 * BIG[0] * BIG[1])
    kept = [ws.empty(BIG, np.float32) for _ in range(3)]
    assert ws.nbytes == 4 * BIG[0] * BIG[1]
    del kept
    ws.clear()
    assert ws.nbytes == 0


def test_over_budget_unused_arrays_of_old_shapes_make_room():
    size = 4 * BIG[0] * BIG[1]
    ws = Workspace(max_bytes=3 * size)
    held = ws.empty(BIG, np.float32)
    ws.empty((BIG[0] + 1, BIG[1]), np.float32)  # unused as soon as it is returned
    assert ws.nbytes > size
    ws.empty((BIG[0] + 2, BIG[1]), np.float32)  # evicts the unused one, not the held one
    assert ws.nbytes <= 3 * size
    assert any(b is held for bufs in ws._pools.values() for b in bufs)
    assert not ws._pools[((BIG[0] + 1, BIG[1]), np.dtype(np.float32))]


def test_empty_like_keeps_the_memory_order():
    ws = Workspace(min_bytes=0)
    channels_last = np.empty((2, 5, 6, 3)).transpose(0, 3, 1, 2)  # (N, C, H, W) view
    out = ws.empty_like(channels_last, dtype=np.float32)
    assert out.shape == channels_last.shape and out.dtype == np.float32
    assert out.transpose(0, 2, 3, 1).flags.c_contiguous
    small = ws.empty_like(channels_last, (2, 3, 2, 2))
    assert small.transpose(0, 2, 3, 1).flags.c_contiguous


# ----------------------------------------------------------------------------- whole graphs
def _data(seed: int, n: int = 8):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n)


def _grads(net: SimpleConvNet, x, t) -> dict[str, np.ndarray]:
    net.zero_grad()
    net.loss(x, t).backward()
    return {k: p.grad.copy() for k, p in net.named_parameters()}


def test_two_graphs_alive_at_once_give_the_gradients_of_each_alone():
    net = SimpleConvNet(seed=0)
    (x1, t1), (x2, t2) = _data(1), _data(2)
    expected1, expected2 = _grads(net, x1, t1), _grads(net, x2, t2)
    net.zero_grad()
    loss1 = net.loss(x1, t1)
    loss2 = net.loss(x2, t2)  # built while graph 1 still holds its saved arrays
    for _ in range(3):  # and more graphs come and go in between
        net.loss(*_data(3)).backward()
    net.zero_grad()
    loss2.backward()
    got2 = {k: p.grad.copy() for k, p in net.named_parameters()}
    net.zero_grad()
    loss1.backward()
    for k, p in net.named_parameters():
        np.testing.assert_array_equal(p.grad, expected1[k], err_msg=k)
        np.testing.assert_array_equal(got2[k], expected2[k], err_msg=k)


def test_outputs_and_gradients_a_user_keeps_survive_later_steps():
    net = SimpleConvNet(seed=0)
    opt = Adam(net.parameters())
    x, t = _data(4)
    act = net.pool1(net.relu1(net.conv1(Tensor(x))))  # activations kept by the user
    loss = net.loss(x, t)
    loss.backward()
    kept = {"act": act.data, "loss": loss.data, "grad": net.fc1.weight.grad}
    before = {k: v.copy() for k, v in kept.items()}
    for seed in range(5, 9):
        opt.zero_grad()
        net.loss(*_data(seed)).backward()
        opt.step()
    for k, v in kept.items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)


def test_a_training_step_allocates_nothing_once_warm():
    net = SimpleConvNet(seed=0)
    opt = Adam(net.parameters())
    x, t = _data(5, n=32)  # big enough for every hot array to be pooled
    for _ in range(2):
        opt.zero_grad()
        net.loss(x, t).backward()
        opt.step()
    before = workspace.allocations
    for _ in range(3):
        opt.zero_grad()
        net.loss(x, t).backward()
        opt.step()
    assert workspace.allocations == before


def test_backward_releases_activations_as_it_goes():
    """An activation held by the graph only is freed once the ops that used it are done, so
    a gradient computed later reuses its buffer."""
    x = Tensor(np.random.default_rng(0).random((67, 1001), dtype=np.float32), requires_grad=True)
    inner = F.relu(x)
    address = inner.data.ctypes.data
    h = F.relu(inner)
    del inner  # now held by the graph only
    seen = []
    with on_op_backward(lambda fn, gy, gxs: seen.append(gxs[0].ctypes.data)):
        F.sum(h).backward()
    assert seen[-1] == address  # the inner ReLU's input gradient took the activation's place
    np.testing.assert_array_equal(x.grad, np.ones_like(x.data))


def test_no_grad_forward_takes_lean_paths_with_the_same_result():
    """Under no_grad the ops save nothing (pooling skips its argmax), values are identical."""
    net = SimpleConvNet(seed=0)
    x, t = _data(6)
    recorded = net.loss(x, t)
    with autograd.no_grad():
        lean = net.loss(x, t)
    assert lean._ctx is None
    np.testing.assert_array_equal(lean.data, recorded.data)
