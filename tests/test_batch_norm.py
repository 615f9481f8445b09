"""Batch normalisation: ``F.batch_norm`` and ``nn.BatchNorm1d/2d`` against PyTorch's vectors in
``tests/data/reference_norm.{json,npz}`` (made by ``tests/data/make_reference_norm.py``), and
the module's modes and buffers through ``state_dict``, params files and Trainer checkpoints.

The op's gradients (float64 gradcheck, second order, float32) are in ``test_ops.py``'s SPECS.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import tinygrad_cnn.functional as F
from tinygrad_cnn import Tensor, functional_nn, grad, nn, no_grad
from tinygrad_cnn.io import load_npz
from tinygrad_cnn.models import SimpleConvNet
from tinygrad_cnn.testing import module_gradcheck
from tinygrad_cnn.train import Trainer

DATA = Path(__file__).resolve().parent / "data"
CASES = json.loads((DATA / "reference_norm.json").read_text())
with np.load(DATA / "reference_norm.npz") as _npz:
    REF = {k: _npz[k] for k in _npz.files}
TOL64 = {"rtol": 1e-10, "atol": 1e-12}
TOL32 = {"rtol": 2e-4, "atol": 2e-5}


def ref(case: dict, field: str, dtype=np.float64) -> np.ndarray:
    return REF[f"{case['case']}.{field}"].astype(dtype)


def _ids(cases):
    return [f"{c['case']}-{'train' if c['training'] else 'eval'}-{len(c['shape'])}d" for c in cases]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_functional_matches_pytorch(case, dtype):
    tol = TOL64 if dtype == np.float64 else TOL32
    x = Tensor(ref(case, "x", dtype), requires_grad=True)
    w = Tensor(ref(case, "weight", dtype), requires_grad=True) if case["affine"] else None
    b = Tensor(ref(case, "bias", dtype), requires_grad=True) if case["affine"] else None
    rm, rv = ref(case, "running_mean", dtype), ref(case, "running_var", dtype)
    y = F.batch_norm(x, rm, rv, w, b, case["training"], case["momentum"], case["eps"])
    assert y.dtype == dtype and y.shape == tuple(case["shape"])
    np.testing.assert_allclose(y.numpy(), ref(case, "y"), **tol)
    np.testing.assert_allclose(rm, ref(case, "running_mean_after"), **tol)
    np.testing.assert_allclose(rv, ref(case, "running_var_after"), **tol)
    (y * ref(case, "gy", dtype)).sum().backward()
    for t, name in ((x, "gx"), (w, "gweight"), (b, "gbias")):
        if t is not None:
            assert t.grad.dtype == dtype
            np.testing.assert_allclose(t.grad, ref(case, name), **tol, err_msg=name)


MODULE_CASES = [c for c in CASES if c["affine"]]


@pytest.mark.parametrize("case", MODULE_CASES, ids=_ids(MODULE_CASES))
def test_module_matches_pytorch(case):
    shape = tuple(case["shape"])
    cls = nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d
    bn = cls(shape[1], eps=case["eps"], momentum=case["momentum"], dtype=np.float64)
    bn.load_state_dict({k: ref(case, k) for k in ("weight", "bias", "running_mean", "running_var")})
    bn.train(case["training"])
    x = Tensor(ref(case, "x"), requires_grad=True)
    y = bn(x)
    np.testing.assert_allclose(y.numpy(), ref(case, "y"), **TOL64)
    (y * ref(case, "gy")).sum().backward()
    np.testing.assert_allclose(x.grad, ref(case, "gx"), **TOL64)
    np.testing.assert_allclose(bn.weight.grad, ref(case, "gweight"), **TOL64)
    np.testing.assert_allclose(bn.bias.grad, ref(case, "gbias"), **TOL64)
    state = bn.state_dict()
    np.testing.assert_allclose(state["running_mean"], ref(case, "running_mean_after"), **TOL64)
    np.testing.assert_allclose(state["running_var"], ref(case, "running_var_after"), **TOL64)


def test_the_reference_data_really_changes_the_running_statistics():
    # guards the reference comparisons above against vacuous data
    for case in CASES:
        moved = not np.allclose(ref(case, "running_mean"), ref(case, "running_mean_after"))
        assert moved == case["training"], case["case"]
    assert {len(c["shape"]) for c in CASES} == {2, 3, 4}
    book = (functional_nn.BOOK_BN_EPS, functional_nn.BOOK_BN_MOMENTUM)
    assert book == (1e-7, 0.1)
    assert any((c["eps"], c["momentum"]) == book and c["training"] for c in CASES)


# ----------------------------------------------------------------------------- modes
def _batch(shape=(6, 3, 4, 4), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (3 * rng.standard_normal(shape) + 2).astype(np.float32)


def test_train_mode_normalises_with_batch_statistics_and_updates_the_running_ones():
    bn = nn.BatchNorm2d(3)
    x = _batch()
    y = bn(Tensor(x)).numpy()
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, rtol=1e-3)
    np.testing.assert_allclose(bn.running_mean, 0.1 * x.mean(axis=(0, 2, 3)), rtol=1e-5)
    expected_var = 0.9 + 0.1 * x.var(axis=(0, 2, 3), ddof=1)  # unbiased, as PyTorch
    np.testing.assert_allclose(bn.running_var, expected_var, rtol=1e-5)
    assert bn.running_mean.dtype == bn.running_var.dtype == np.float32


def test_eval_mode_uses_the_running_statistics_and_leaves_them_alone():
    bn = nn.BatchNorm1d(4)
    bn.running_mean[:] = [1.0, -2.0, 0.5, 0.0]
    bn.running_var[:] = [4.0, 1.0, 0.25, 9.0]
    bn.weight.data[:] = [2.0, 1.0, -1.0, 0.5]
    bn.eval()
    x = _batch((5, 4))
    y = bn(Tensor(x)).numpy()
    expected = bn.weight.numpy() * (x - bn.running_mean) / np.sqrt(bn.running_var + 1e-5)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(bn.running_mean, [1.0, -2.0, 0.5, 0.0])
    one = bn(Tensor(x[2:3])).numpy()  # a sample's output does not depend on its batch
    np.testing.assert_allclose(one[0], y[2], rtol=1e-6)
    bn.train()
    assert not np.allclose(bn(Tensor(x)).numpy(), y, atol=1e-2)


def test_running_statistics_update_under_no_grad_in_train_mode_as_pytorch():
    bn = nn.BatchNorm1d(2)
    with no_grad():
        bn(Tensor(_batch((4, 2))))
    assert not np.array_equal(bn.running_mean, np.zeros(2))


def test_eval_graph_keeps_the_statistics_it_was_built_with():
    # the op holds copies: a later update of the buffers must not leak into backward_graph
    x = Tensor(_batch((4, 3)).astype(np.float64), requires_grad=True)
    bn = nn.BatchNorm1d(3, dtype=np.float64).eval()
    bn.running_var[:] = [4.0, 1.0, 0.25]
    y = bn(x)
    bn.running_var[:] = 100.0
    (gx,) = grad(y.sum(), x, create_graph=True)
    np.testing.assert_allclose(gx.numpy()[0], 1 / np.sqrt(np.array([4.0, 1.0, 0.25]) + 1e-5))


def test_module_gradients_in_train_mode():
    rng = np.random.default_rng(1)
    bn = nn.BatchNorm2d(2, dtype=np.float64)
    bn.weight.data[:] = [1.5, -0.7]
    x = Tensor(rng.standard_normal((3, 2, 2, 2)))
    gy = rng.standard_normal((3, 2, 2, 2))
    assert module_gradcheck(bn, lambda: (bn(x) * gy).sum())


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda x: F.batch_norm(x[0], None, None, training=True), ValueError, r"\(N, C\)"),
        (lambda x: F.batch_norm(x, None, None), ValueError, "needs running_mean"),
        (lambda x: F.batch_norm(x, np.zeros(3), None, training=True), ValueError, "both"),
        (lambda x: F.batch_norm(x, [0.0] * 3, [1.0] * 3), TypeError, "running_mean"),
        (lambda x: F.batch_norm(x, np.zeros(2), np.ones(2)), ValueError, r"\(3,\), got \(2,\)"),
        (lambda x: F.batch_norm(x, None, None, np.ones(2), training=True), ValueError, "weight"),
        (lambda x: F.batch_norm(x[:1], None, None, training=True), ValueError, "more than one"),
        (lambda x: F.batch_norm(x, None, None, training=True, momentum=1.5), ValueError, "momen"),
        (lambda x: F.batch_norm(x, None, None, training=True, eps=0.0), ValueError, "eps"),
        (lambda x: F.batch_norm(x, None, None, training=1), TypeError, "training"),
        (lambda x: nn.BatchNorm2d(3)(x), ValueError, "BatchNorm2d: input must be 4-d"),
        (lambda x: nn.BatchNorm1d(0), ValueError, "num_features"),
    ],
)
def test_bad_input_raises_a_clear_error(call, error, match):
    x = Tensor(_batch((4, 3)))
    with pytest.raises(error, match=match):
        call(x)


def test_a_failed_call_leaves_the_running_statistics_unchanged():
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    with pytest.raises(ValueError, match="weight"):
        F.batch_norm(Tensor(_batch((4, 3))), rm, rv, np.ones(2, np.float32), training=True)
    np.testing.assert_array_equal(rm, 0)
    np.testing.assert_array_equal(rv, 1)


# ----------------------------------------------------------------------------- buffers
class BNNet(nn.Module):
    """conv -> BatchNorm2d -> relu -> linear -> BatchNorm1d, with the book's ``loss``."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, rng=seed)
        self.bn1 = nn.BatchNorm2d(2)
        self.fc = nn.Linear(2 * 4 * 4, 3, rng=seed + 1)
        self.bn2 = nn.BatchNorm1d(3)

    def forward(self, x):
        return self.bn2(self.fc(F.flatten(F.relu(self.bn1(self.conv(x))))))

    def loss(self, x, t):
        return F.softmax_cross_entropy(self(x), t)


def test_buffers_are_in_state_dict_but_not_in_parameters():
    net = BNNet()
    names = [n for n, _ in net.named_parameters()]
    assert "bn1.running_mean" not in names and "bn1.weight" in names
    assert [n for n, _ in net.named_buffers()] == [
        "bn1.running_mean", "bn1.running_var", "bn2.running_mean", "bn2.running_var"]  # fmt: skip
    state = net.state_dict()
    assert set(state) == {*names, *(n for n, _ in net.named_buffers())}
    state["bn1.running_var"][:] = 7.0  # a copy
    np.testing.assert_array_equal(net.bn1.running_var, 1.0)


def test_load_state_dict_restores_buffers_in_place_all_or_nothing():
    a, b = BNNet(seed=0), BNNet(seed=5)
    a(Tensor(_batch((4, 1, 6, 6))))  # moves a's running statistics
    buffer = b.bn1.running_mean
    b.load_state_dict(a.state_dict())
    assert b.bn1.running_mean is buffer  # in place: the module still holds its own array
    for (name, x), (_, y) in zip(a.named_buffers(), b.named_buffers(), strict=True):
        np.testing.assert_array_equal(x, y, err_msg=name)
    c = BNNet(seed=9)
    before = c.state_dict()
    bad = a.state_dict()
    bad["bn2.running_var"] = np.ones(4, np.float32)
    with pytest.raises(ValueError, match=r"bn2.running_var has shape \(4,\)"):
        c.load_state_dict(bad)
    missing = a.state_dict()
    del missing["bn1.running_mean"]
    with pytest.raises(ValueError, match="bn1.running_mean"):
        c.load_state_dict(missing)
    for k, v in c.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)


def test_register_buffer_refuses_bad_names_and_values():
    m = nn.BatchNorm1d(2)
    with pytest.raises(ValueError, match="already exists"):
        m.register_buffer("weight", np.zeros(2))
    with pytest.raises(ValueError, match="identifier"):
        m.register_buffer("a.b", np.zeros(2))
    with pytest.raises(TypeError, match="buffer 'c' must be a real numeric ndarray"):
        m.register_buffer("c", [0.0])
    with pytest.raises(TypeError, match="buffer 'running_mean'"):
        m.running_mean = "zeros"
    m.running_mean = np.full(2, 3.0, np.float32)  # assigning replaces the buffer
    assert m.state_dict()["running_mean"].tolist() == [3.0, 3.0]


class BNConvNet(SimpleConvNet):
    """SimpleConvNet's file methods on a network with buffers."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__((1, 6, 6), {"filter_num": 2, "filter_size": 3}, 4, 3, "he", seed)
        self.bn = nn.BatchNorm2d(2)


def test_params_file_round_trip_carries_the_buffers(tmp_path):
    net = BNConvNet(seed=0)
    net.bn(Tensor(_batch((4, 2, 3, 3))))
    path = tmp_path / "params.npz"
    net.save_params(path)
    assert set(load_npz(path)) == set(net.state_dict())
    other = BNConvNet(seed=3)
    other.load_params(path)
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(other.state_dict()[k], v, err_msg=k)


def test_a_params_file_without_buffers_is_refused_and_simple_conv_net_files_are_unchanged(
    tmp_path,
):
    plain = SimpleConvNet((1, 6, 6), {"filter_num": 2, "filter_size": 3}, 4, 3, "he", 1)
    assert list(plain.named_buffers()) == []
    assert set(plain.state_dict()) == {n for n, _ in plain.named_parameters()}
    path = tmp_path / "plain.npz"
    plain.save_params(path)
    net = BNConvNet(seed=0)
    before = net.state_dict()
    with pytest.raises(ValueError, match="bn.running_mean"):
        net.load_params(path)
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)


def test_trainer_checkpoint_round_trip_carries_the_buffers(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 1, 6, 6)).astype(np.float32)
    t = rng.integers(0, 3, 40)
    ckpt = tmp_path / "checkpoint.npz"
    net = BNNet(seed=0)
    trainer = Trainer(net, x, t, x[:10], t[:10], epochs=1, mini_batch_size=10, verbose=False,
                      seed=0, checkpoint=ckpt)  # fmt: skip
    trainer.train()
    assert not np.allclose(net.bn1.running_mean, 0)
    saved = load_npz(ckpt)
    np.testing.assert_array_equal(saved["param/bn2.running_var"], net.bn2.running_var)
    fresh = BNNet(seed=4)
    resumed = Trainer(fresh, x, t, x[:10], t[:10], epochs=2, mini_batch_size=10, verbose=False,
                      seed=0)  # fmt: skip
    resumed.load_checkpoint(ckpt)
    for (name, a), (_, b) in zip(net.named_buffers(), fresh.named_buffers(), strict=True):
        np.testing.assert_array_equal(a, b, err_msg=name)
