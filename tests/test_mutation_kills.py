"""Tests that kill the nine real-bug mutants of issue 13's hand mutation pass.

Each test is named for the behaviour it guards; each was checked to fail with its mutant
applied (the mutant is named in the docstring). Oracles are float64 formulas or hand-written
values, never the code under test.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest

import tinygrad_cnn.functional as F
from tinygrad_cnn import Tensor, data, on_op_backward, optim
from tinygrad_cnn.io import parse_idx
from tinygrad_cnn.models import accuracy
from tinygrad_cnn.nn import Dropout, Linear, Module, ReLU, Sequential, predict_classes
from tinygrad_cnn.testing import gradcheck

# --------------------------------------------------------------------------- ReLU at 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(5,), (2, 3, 4, 5)])
def test_relu_gradient_at_exactly_zero_is_zero(dtype, shape) -> None:
    """Mutant: ``np.greater(x, 0)`` -> ``np.greater_equal`` in ReLU's mask."""
    rng = np.random.default_rng(0)
    x = rng.choice(np.array([-1.5, 0.0, 0.0, 2.0], dtype), size=shape)
    x.flat[:3] = (-1.5, 0.0, 2.0)  # every kind present
    gy = rng.uniform(0.5, 2.0, shape).astype(dtype)
    xt = Tensor(x, requires_grad=True)
    (F.relu(xt) * gy).sum().backward()
    expected = np.where(x > 0, gy, 0).astype(dtype)  # documented: the gradient at 0 is 0
    assert xt.grad.dtype == dtype
    np.testing.assert_array_equal(xt.grad, expected)
    assert not xt.grad[x == 0].any()


# --------------------------------------------------------------------------- max ties


@pytest.mark.parametrize("graph", [False, True], ids=["backward", "create_graph"])
def test_max_over_all_sends_gradient_to_the_first_maximum_in_c_order(graph) -> None:
    """Mutant: the last (or any other) maximal element gets the gradient."""
    x = Tensor(np.array([[1.0, 4.0, 4.0], [4.0, 0.0, 4.0]], np.float32), requires_grad=True)
    (F.max(x) * 3.0).backward(create_graph=graph)
    grad = x.grad.numpy() if isinstance(x.grad, Tensor) else x.grad
    np.testing.assert_array_equal(grad, [[0, 3, 0], [0, 0, 0]])
    x = Tensor(np.array([[1.0, 4.0], [4.0, 0.0]], np.float32), requires_grad=True)
    (F.max(x, axis=1, keepdims=True) * 2.0).sum().backward(create_graph=graph)
    grad = x.grad.numpy() if isinstance(x.grad, Tensor) else x.grad
    np.testing.assert_array_equal(grad, [[0, 2], [2, 0]])


@pytest.mark.parametrize("keepdims", [False, True])
def test_max_along_an_axis_sends_each_gradient_to_the_first_maximum(keepdims) -> None:
    """Mutant: ties along the axis resolved to the last maximum."""
    x = np.array([[5.0, 5.0, 1.0, 5.0], [0.0, 2.0, 2.0, -1.0], [7.0, 7.0, 7.0, 7.0]])
    gy = np.array([1.0, 2.0, 3.0])
    xt = Tensor(x, requires_grad=True)
    y = F.max(xt, axis=1, keepdims=keepdims)
    assert y.shape == ((3, 1) if keepdims else (3,))
    (y * (gy[:, None] if keepdims else gy)).sum().backward()
    expected = np.zeros_like(x)
    expected[[0, 1, 2], [0, 1, 0]] = gy
    np.testing.assert_array_equal(xt.grad, expected)
    # along axis 0 as well: column 0 ties between rows 2 (7) and nothing, column 1 too
    xt = Tensor(x.T.copy(), requires_grad=True)
    F.max(xt, axis=0).sum().backward()
    np.testing.assert_array_equal(xt.grad, (expected > 0).T.astype(np.float64))


# --------------------------------------------------------------------------- soft labels


def _logsoftmax64(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    m = z.max(axis=1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))


def _soft_labels() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    z = rng.normal(0, 2, (4, 5))
    t = rng.uniform(0, 1, (4, 5))
    t *= np.array([0.5, 2.0, 1.3, 0.0])[:, None] / t.sum(axis=1, keepdims=True)  # row sums
    return z, t


def _grad_of(t: Tensor) -> np.ndarray:
    return t.grad.numpy() if isinstance(t.grad, Tensor) else t.grad


@pytest.mark.parametrize("graph", [False, True], ids=["backward", "create_graph"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_softmax_ce_soft_labels_not_summing_to_one(dtype, graph) -> None:
    """Mutant: the gradient ``softmax * rowsum(t) - t`` written as ``softmax - t``."""
    z, t = _soft_labels()
    N = len(z)
    logp = _logsoftmax64(z)
    loss64 = -(t * logp).sum() / N
    gz64 = (np.exp(logp) * t.sum(axis=1, keepdims=True) - t) / N
    zt = Tensor(z.astype(dtype), requires_grad=True)
    loss = F.softmax_cross_entropy(zt, t.astype(dtype))
    assert loss.dtype == dtype
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(float(loss.data), loss64, rtol=tol)
    (loss * 2.5).backward(create_graph=graph)
    np.testing.assert_allclose(_grad_of(zt), 2.5 * gz64, rtol=tol, atol=tol)


@pytest.mark.parametrize("graph", [False, True], ids=["backward", "create_graph"])
def test_softmax_ce_gradient_with_respect_to_soft_labels(graph) -> None:
    """Mutant: the labels' gradient dropped, sign-flipped or not scaled by ``gy / N``."""
    z, t = _soft_labels()
    zt, tt = Tensor(z, requires_grad=True), Tensor(t, requires_grad=True)
    (F.softmax_cross_entropy(zt, tt) * -1.75).backward(create_graph=graph)
    np.testing.assert_allclose(_grad_of(tt), -1.75 * -_logsoftmax64(z) / len(z), rtol=1e-12)
    np.testing.assert_allclose(
        _grad_of(zt),
        -1.75 * (np.exp(_logsoftmax64(z)) * t.sum(1, keepdims=True) - t) / 4,
        rtol=1e-12,
    )
    zt, seen = Tensor(z, requires_grad=True), []
    with on_op_backward(lambda fn, gy, gxs: seen.append(gxs[1])):
        F.softmax_cross_entropy(zt, t).backward(create_graph=graph)
    assert seen == [None]  # constant labels: no gradient computed for them
    labels = np.array([0, 3, 4, 1])
    zt = Tensor(z, requires_grad=True)
    F.softmax_cross_entropy(zt, labels).backward(create_graph=graph)
    onehot = np.eye(5)[labels]
    np.testing.assert_allclose(_grad_of(zt), (np.exp(_logsoftmax64(z)) - onehot) / 4, rtol=1e-12)
    # labels alone, and both, against float64 central differences with a random upstream
    assert gradcheck(F.softmax_cross_entropy, Tensor(z), Tensor(t, requires_grad=True))
    assert gradcheck(F.softmax_cross_entropy, Tensor(z, requires_grad=True), Tensor(t, True))


# --------------------------------------------------------------------------- IDX files


def _idx(arr: np.ndarray, magic: int | None = None) -> bytes:
    magic = {1: 0x801, 3: 0x803}[arr.ndim] if magic is None else magic
    dims = b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return magic.to_bytes(4, "big") + dims + arr.astype(np.uint8).tobytes()


@pytest.mark.parametrize(
    "magic", [0x01000801, 0x00010801, 0x80000803, 0x00FF0803, 0x00000901, 0x00000C03]
)
def test_idx_magic_number_is_checked_in_all_four_bytes(magic, tmp_path: Path) -> None:
    """Mutant: only the low bytes (type code and ndim) of the magic number compared."""
    arr = np.arange(6, dtype=np.uint8) if magic & 0xFF == 1 else np.zeros((1, 2, 3), np.uint8)
    blob = _idx(arr, magic)
    with pytest.raises(ValueError, match=f"0x{magic:08x}"):
        parse_idx(blob, "x.idx")
    for name, content in (("raw", blob), ("gz.gz", gzip.compress(blob, mtime=0))):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=f"{name}.*magic number is 0x{magic:08x}"):
            data.read_idx(tmp_path / name)
    np.testing.assert_array_equal(parse_idx(_idx(arr), "ok"), arr)  # the valid magic passes


@pytest.fixture
def fake_root(tmp_path: Path, monkeypatch) -> tuple[Path, dict[str, bytes]]:
    """Four raw (not gzipped) IDX files whose sha256 is installed as the official one."""
    rng = np.random.default_rng(7)
    arrays = [
        rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
        np.array([3, 1, 4, 1], np.uint8),
        rng.integers(0, 256, (2, 28, 28), dtype=np.uint8),
        np.array([5, 9], np.uint8),
    ]
    payloads = dict(zip(data.FILES, map(_idx, arrays), strict=True))
    for name, raw in payloads.items():
        monkeypatch.setitem(data.SHA256_PAYLOAD, name, hashlib.sha256(raw).hexdigest())
        (tmp_path / name).write_bytes(raw)
    return tmp_path, payloads


def test_raw_idx_files_load_when_their_sha256_matches(fake_root) -> None:
    root, payloads = fake_root
    (x, t), (xt, tt) = data.load_mnist(root, download=False, normalize=False)
    np.testing.assert_array_equal(t, [3, 1, 4, 1])
    np.testing.assert_array_equal(tt, [5, 9])
    np.testing.assert_array_equal(x.reshape(-1), np.frombuffer(payloads[data.FILES[0]][16:], "u1"))


@pytest.mark.parametrize("which", range(4))
@pytest.mark.parametrize("gz", [False, True])
def test_tampered_idx_file_fails_its_sha256_raw_or_gzipped(fake_root, which, gz) -> None:
    """Mutant: the sha256 check applied to ``.gz`` files only (or skipped for raw files)."""
    root, payloads = fake_root
    name = data.FILES[which]
    raw = bytearray(payloads[name])
    raw[-1] = (raw[-1] + 1) % 10  # still a well-formed IDX file with valid labels
    (root / name).unlink()
    path = root / (f"{name}.gz" if gz else name)
    path.write_bytes(gzip.compress(bytes(raw), mtime=0) if gz else bytes(raw))
    with pytest.raises(ValueError, match=rf"{path.name}: decompressed content has sha256"):
        data.load_mnist(root, download=False)


# --------------------------------------------------------------------------- optimizer state

STATEFUL = [optim.Momentum, optim.Nesterov, optim.AdaGrad, optim.RMSprop, optim.Adam]


def _param(seed: int) -> Tensor:
    rng = np.random.default_rng(seed)
    p = Tensor(rng.normal(size=(3, 4)).astype(np.float32), requires_grad=True)
    p.grad = rng.normal(size=(3, 4)).astype(np.float32)
    return p


@pytest.mark.parametrize("cls", STATEFUL, ids=lambda c: c.__name__)
def test_optimizer_load_state_dict_copies_the_callers_arrays(cls) -> None:
    """Mutant: ``load_state_dict`` stores the caller's arrays instead of copying them in."""
    src = cls([_param(0)], lr=0.1)
    src.step()
    src.step()
    state = src.state_dict()
    before = {k: np.array(v, copy=True) for k, v in state.items()}
    dst = cls([_param(1)], lr=0.1)
    dst.load_state_dict(state)
    dst.step()
    dst.step()
    for k, v in state.items():
        np.testing.assert_array_equal(v, before[k], err_msg=f"{cls.__name__}: {k} changed")
    # and the state really was loaded (the slots differ from the fresh ones after a step)
    fresh = cls([_param(1)], lr=0.1)
    fresh.step()
    fresh.step()
    slot = f"state.0.{cls.slots[0]}"
    assert not np.array_equal(dst.state_dict()[slot], fresh.state_dict()[slot])


@pytest.mark.parametrize("cls", STATEFUL, ids=lambda c: c.__name__)
def test_optimizer_state_dict_is_a_snapshot(cls) -> None:
    """Mutant: ``state_dict`` hands out the live state arrays."""
    opt = cls([_param(0)], lr=0.1)
    opt.step()
    state = opt.state_dict()
    before = {k: np.array(v, copy=True) for k, v in state.items()}
    opt.step()
    for k, v in state.items():
        np.testing.assert_array_equal(v, before[k], err_msg=f"{cls.__name__}: {k} changed")


# --------------------------------------------------------------------------- Module state


class _Three(Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = Linear(2, 3, rng=0)
        self.b = Linear(3, 4, rng=1)
        self.c = Linear(4, 2, rng=2)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((4, 3), np.float32),  # transposed
        np.array([["x"] * 2] * 4),  # strings of the right shape
        np.zeros((4, 2), [("f", "<f4")]),  # structured
        np.full((4, 2), 1e300),  # overflows float32
        np.zeros((4, 2), np.complex64),
    ],
    ids=["shape", "strings", "structured", "overflow", "complex"],
)
@pytest.mark.parametrize("strict", [True, False])
def test_module_load_state_dict_is_all_or_nothing(bad, strict) -> None:
    """Mutant: entries copied in while still validating, so a bad late entry half-applies."""
    net = _Three()
    before = {k: v.copy() for k, v in net.state_dict().items()}
    state = {k: v + 1 for k, v in before.items()}
    state["c.weight"] = bad  # the second-to-last entry: earlier ones are valid
    with pytest.raises(ValueError, match=r"c\.weight"):
        net.load_state_dict(state, strict=strict)
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=f"{k} was overwritten")
    # the same dict with the bad entry fixed loads completely
    state["c.weight"] = before["c.weight"] + 1
    net.load_state_dict(state, strict=strict)
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v, before[k] + 1)


# --------------------------------------------------------------------------- train / eval


def _dropout_net() -> Sequential:
    return Sequential(Linear(6, 16, rng=0), ReLU(), Dropout(0.5, rng=1), Linear(16, 3, rng=2))


def _drops(net: Module, x: np.ndarray) -> bool:
    """True when two forward passes differ, i.e. dropout is active."""
    return not np.array_equal(net(Tensor(x)).numpy(), net(Tensor(x)).numpy())


def _modes(net: Module) -> dict[str, bool]:
    return {name: m.training for name, m in net.named_modules()}


@pytest.mark.parametrize("how", ["predict_classes", "accuracy"])
def test_prediction_leaves_an_eval_network_in_eval_mode(how) -> None:
    """Mutant: the mode restored to ``True`` (training) instead of what it was."""
    x = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)
    net = _dropout_net().eval()
    reference = net(Tensor(x)).numpy().argmax(axis=1)
    if how == "predict_classes":
        np.testing.assert_array_equal(predict_classes(net, x, batch_size=7), reference)
    else:
        assert accuracy(net, x, reference, batch_size=7) == 1.0
    assert not any(_modes(net).values())
    assert not _drops(net, x)


@pytest.mark.parametrize("how", ["predict_classes", "accuracy"])
def test_prediction_runs_in_eval_mode_and_restores_training_mode(how) -> None:
    """Mutants: prediction with dropout on; the mode left at eval afterwards."""
    x = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)
    net = _dropout_net()
    reference = net.eval()(Tensor(x)).numpy().argmax(axis=1)
    net.train()
    if how == "predict_classes":
        np.testing.assert_array_equal(predict_classes(net, x, batch_size=7), reference)
    else:
        assert accuracy(net, x, reference, batch_size=7) == 1.0
    assert all(_modes(net).values())
    assert _drops(net, x)
