"""Gradient audit of recorded graphs (real nets, planted bugs, kinks) and anomaly mode."""

from __future__ import annotations

import numpy as np
import pytest

import tinygrad_cnn.functional as F
from tinygrad_cnn import Function, Tensor
from tinygrad_cnn.audit import audit_graph
from tinygrad_cnn.cli import main
from tinygrad_cnn.nn import SimpleConvNet


class AuditTestSwappedConv(Function):
    """Stride-1 unpadded conv whose weight gradient has KH and KW swapped (square kernel)."""

    def forward(self, x, w):
        N, OC, K = x.shape[0], w.shape[0], w.shape[2]
        OH, OW = x.shape[2] - K + 1, x.shape[3] - K + 1
        col = F.im2col(x, K)  # (N*OH*OW, C*K*K)
        self.save(col=col, w=w)
        self.x_shape = x.shape
        y = col @ w.reshape(OC, -1).T  # (N*OH*OW, OC) -> (N, OC, OH, OW)
        return np.ascontiguousarray(y.reshape(N, OH, OW, OC).transpose(0, 3, 1, 2))

    def backward(self, gy):
        col, w = self.saved["col"], self.saved["w"]
        OC, K = w.shape[0], w.shape[2]
        gy2 = gy.transpose(0, 2, 3, 1).reshape(-1, OC)  # (N, OC, OH, OW) -> (N*OH*OW, OC)
        gx = F.col2im(gy2 @ w.reshape(OC, -1), self.x_shape, K)
        gw = (gy2.T @ col).reshape(w.shape).transpose(0, 1, 3, 2)  # the bug
        return gx, gw


class AuditTestHalfSquare(Function):
    """x**2 with the factor 2 forgotten in backward."""

    def forward(self, x):
        self.save(x=x)
        return x * x

    def backward(self, gy):
        return gy * self.saved["x"]


class AuditTestWrongAdjoint(Function):
    """y = x @ a for a fixed square matrix ``a``; backward applies ``a`` instead of ``a.T``."""

    attr_names = ("a",)

    def forward(self, x):
        return x @ self.a

    def backward(self, gy):
        return gy @ self.a  # should be gy @ self.a.T


def net_loss(n: int = 8) -> Tensor:
    rng = np.random.default_rng(0)
    net = SimpleConvNet(seed=0)
    return net.loss(rng.random((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n))


# ----------------------------------------------------------------------------- audit
def test_simpleconvnet_every_op_passes():
    loss = net_loss()
    loss.backward(retain_graph=True)
    report = audit_graph(loss)
    assert [r.op.split()[0] for r in report.rows] == [
        "Conv2d", "ReLU", "MaxPool2d", "Reshape", "Linear", "ReLU", "Linear",
        "SoftmaxCrossEntropy",
    ]  # fmt: skip
    assert report.ok and not report.failed and all(r.status == "ok" for r in report.rows)
    assert all(r.error < 1e-7 for r in report.rows), str(report)
    assert report.rows[0].input_shapes == ((8, 1, 28, 28), (30, 1, 5, 5), (30,))
    assert report.rows[0].node == "n3" and report.rows[0].scope == "SimpleConvNet.conv1"
    table = str(report)
    assert "Conv2d k=5x5 s=1 p=0" in table and "(8,1,28,28) (30,1,5,5) (30,)" in table
    assert table.splitlines()[-1] == "8 ops: 8 ok, 0 failed, 0 skipped"
    col = table.splitlines()[0].index("rel. error")  # aligned: every error in that column
    assert all(float(line[col:].split()[0]) < 1e-7 for line in table.splitlines()[1:-1])
    # Not yet backpropagated works too, and leaves the parameters' gradients alone.
    fresh = net_loss(2)
    assert audit_graph(fresh).ok
    assert all(p.grad is None for p in fresh.op.parents[0].op.parents[1:])


def test_planted_conv_bug_is_the_only_failure(tmp_path):
    rng = np.random.default_rng(1)
    x = Tensor(rng.random((4, 2, 9, 9)))
    w = Tensor(rng.standard_normal((3, 2, 3, 3)), requires_grad=True, name="conv.weight")
    w2 = Tensor(0.1 * rng.standard_normal((3 * 49, 5)), requires_grad=True, name="fc.weight")
    h = F.relu(AuditTestSwappedConv.apply(x, w)).reshape(4, -1)
    loss = F.softmax_cross_entropy(F.linear(h, w2), rng.integers(0, 5, 4))
    loss.backward(retain_graph=True)
    for max_fd in (64, 0):  # with and without element-wise central differences
        report = audit_graph(loss, max_fd_elements=max_fd)
        assert [r.op for r in report.failed] == ["AuditTestSwappedConv"], str(report)
        bad = report.failed[0]
        assert bad.index == 0 and bad.check == ("vjp+fd" if max_fd else "vjp")
        assert bad.error > 1e-3 and "FAIL" in str(report)
    assert "input 1" in audit_graph(loss).failed[0].note  # gradcheck names the weight
    src = report.draw().source
    red = [ln for ln in src.splitlines() if "color=red" in ln]
    assert len(red) == 1 and red[0].strip().startswith(f"{bad.node} [label=AuditTestSwappedConv")
    assert report.render(tmp_path / "audit.dot").read_text() == src


def test_buggy_elementwise_op_is_flagged():
    rng = np.random.default_rng(2)
    x = Tensor(rng.standard_normal((20, 30)), requires_grad=True)  # 600 elements: vjp only
    loss = (AuditTestHalfSquare.apply(x.tanh()) * 3.0).mean()
    report = audit_graph(loss)
    assert [r.op for r in report.failed] == ["AuditTestHalfSquare"]
    assert (
        report.failed[0].check == "vjp" and abs(report.failed[0].error - 0.5) < 1e-6
    )  # |2a - a| / 2a
    small = audit_graph(AuditTestHalfSquare.apply(Tensor(np.ones(3), requires_grad=True)).sum())
    assert [r.check for r in small.failed] == ["vjp+fd"]


def wrong_adjoint_report(n: int, max_fd: int):
    rng = np.random.default_rng(3)
    x = Tensor(rng.standard_normal((n, n)), requires_grad=True)
    a = rng.standard_normal((n, n))
    return audit_graph(AuditTestWrongAdjoint.apply(x.tanh(), a=a).sum(), max_fd_elements=max_fd)


def test_wrong_adjoint_is_flagged_by_central_differences():
    assert [r.op for r in wrong_adjoint_report(4, 64).failed] == [
        "AuditTestWrongAdjoint a=array(4, 4)"
    ]


def test_wrong_adjoint_is_flagged_by_the_dot_product_test():
    assert [r.check for r in wrong_adjoint_report(20, 0).failed] == ["vjp"]


def test_kinks_are_held_fixed_and_reported():
    x = Tensor(np.array([[-1.0, 0.0, 2.0, 0.0], [3.0, -2.0, 0.0, 1.0]]), requires_grad=True)
    row = audit_graph(x.relu().sum()).rows[0]
    assert row.status == "ok" and row.note == "3 of 8 input elements on a kink held fixed"
    # Max pooling over windows with ties (all-equal 2x2 blocks).
    img = Tensor(np.kron(np.arange(4.0).reshape(1, 1, 2, 2), np.ones((2, 2))), requires_grad=True)
    pool = audit_graph(F.max_pool2d(img, 2).sum()).rows[0]
    assert pool.op.startswith("MaxPool2d") and pool.status == "skipped"
    assert audit_graph(Tensor(np.zeros(5), requires_grad=True).relu().sum()).rows[0].status == (
        "skipped"
    )
    ties = Tensor(np.array([[1.0, 1.0, 0.5], [2.0, 0.0, 1.0]]), requires_grad=True)
    row = audit_graph(ties.max(axis=1).sum()).rows[0]
    assert row.status == "ok" and row.note.startswith("2 of 6")
    # A kink never hides a real bug: a "ReLU" that lets negative inputs through fails.
    leaky = audit_graph(AuditTestHalfSquare.apply(x.relu()).sum())
    assert [r.op for r in leaky.failed] == ["AuditTestHalfSquare"]


def test_audit_of_a_freed_graph_raises():
    loss = net_loss(2)
    loss.backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        audit_graph(loss)


def test_audit_command_on_embedded_data(capsys):
    assert main(["audit"]) == 0
    out = capsys.readouterr().out
    assert "8 ops: 8 ok, 0 failed, 0 skipped" in out and "(100,1,28,28)" in out


class AuditTestRamp(Function):
    """max(x, 0) written by a user, with its kink at 0 declared through ``kinks``."""

    def forward(self, x):
        self.save(x=x)
        return np.maximum(x, 0)

    def backward(self, gy):
        return gy * (self.saved["x"] > 0)

    def kinks(self, x, margin):
        return [np.abs(x) <= margin]


class AuditTestRampUndeclared(AuditTestRamp):
    def kinks(self, x, margin):
        return None


def test_a_user_op_declares_its_kinks_and_audits_clean():
    x = Tensor(np.array([-1.5, 0.0, 2.0, 0.0, 0.5]), requires_grad=True)
    declared = audit_graph(AuditTestRamp.apply(x).sum()).rows[0]
    assert declared.status == "ok" and declared.note.startswith("2 of 5")
    # Without the declaration the finite differences straddle the kink: a false alarm.
    assert audit_graph(AuditTestRampUndeclared.apply(x).sum()).rows[0].status == "FAIL"
