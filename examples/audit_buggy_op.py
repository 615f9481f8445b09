"""Find a wrong backward in a whole network: audit every op node, draw the bad one in red.

    python examples/audit_buggy_op.py [out.svg]

``MyConv2d`` is a convolution written the way a learner might write it, from ``im2col``,
with one slip: the weight gradient comes back with its kernel axes swapped. Shapes still fit
(the kernel is square), the net trains "fine" for a while, and nothing crashes. The audit
re-runs each op of the recorded graph on float64 copies of its real inputs and checks its
backward; only ``MyConv2d`` fails.
"""

import sys
import tempfile
from pathlib import Path

import numpy as np

import tinygrad_cnn.functional as F
from tinygrad_cnn import Function, Tensor
from tinygrad_cnn.audit import audit_graph
from tinygrad_cnn.viz import GraphvizNotFoundError


class MyConv2d(Function):
    """Stride-1, unpadded convolution: x (N, C, H, W), w (OC, C, K, K) -> (N, OC, OH, OW)."""

    def forward(self, x, w):
        N, OC, K = x.shape[0], w.shape[0], w.shape[2]
        OH, OW = x.shape[2] - K + 1, x.shape[3] - K + 1
        col = F.im2col(x, K)  # (N*OH*OW, C*K*K)
        self.save(col=col, w=w)
        self.x_shape = x.shape
        y = col @ w.reshape(OC, -1).T  # (N*OH*OW, OC)
        return y.reshape(N, OH, OW, OC).transpose(0, 3, 1, 2)  # -> (N, OC, OH, OW)

    def backward(self, gy):
        col, w = self.saved["col"], self.saved["w"]
        OC, K = w.shape[0], w.shape[2]
        gy2 = gy.transpose(0, 2, 3, 1).reshape(-1, OC)  # (N, OC, OH, OW) -> (N*OH*OW, OC)
        gx = F.col2im(gy2 @ w.reshape(OC, -1), self.x_shape, K)
        gw = (gy2.T @ col).reshape(w.shape)  # (OC, C*K*K) -> (OC, C, K, K)
        return gx, gw.transpose(0, 1, 3, 2)  # BUG: KH and KW swapped (shapes agree: K == K)


def main(out: Path) -> int:
    rng = np.random.default_rng(0)
    x = Tensor(rng.random((8, 1, 12, 12)))
    t = rng.integers(0, 10, size=8)
    w = Tensor(0.3 * rng.standard_normal((4, 1, 3, 3)), requires_grad=True, name="conv.weight")
    w2 = Tensor(0.1 * rng.standard_normal((4 * 5 * 5, 10)), requires_grad=True, name="fc.weight")
    b2 = Tensor(np.zeros(10), requires_grad=True, name="fc.bias")

    h = F.max_pool2d(F.relu(MyConv2d.apply(x, w)), 2)  # (8, 4, 10, 10) -> (8, 4, 5, 5)
    loss = F.softmax_cross_entropy(F.linear(F.flatten(h), w2, b2), t)
    loss.backward(retain_graph=True)

    report = audit_graph(loss)
    print(report)
    print("failing:", ", ".join(f"{r.node} {r.op}" for r in report.failed) or "none")
    try:
        print("graph with the failing op in red:", report.render(out))
    except GraphvizNotFoundError as e:
        dot = report.render(out.with_suffix(".dot"))
        print(f"{e}\nwrote the DOT source instead: {dot}")
    return 0


if __name__ == "__main__":
    default = Path(tempfile.gettempdir()) / "audit_buggy.svg"
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else default))
