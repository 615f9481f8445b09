"""Graph rendering: DOT content, module clusters, gradient labels, determinism, scale, errors."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import tinygrad_cnn.functional as F
from tinygrad_cnn import Function, Tensor
from tinygrad_cnn.cli import main
from tinygrad_cnn.nn import SimpleConvNet
from tinygrad_cnn.viz import (
    GraphvizNotFoundError,
    draw_graph,
    op_label,
    plot_module,
    render_graph,
)

NET_SNIPPET = """
import numpy as np
from tinygrad_cnn.nn import SimpleConvNet
from tinygrad_cnn.viz import draw_graph
rng = np.random.default_rng(0)
net = SimpleConvNet(seed=0)
loss = net.loss(rng.random((8, 1, 28, 28), dtype=np.float32), np.arange(8) % 10)
loss.backward(retain_graph=True)
SOURCE = draw_graph(loss, show_grads=True).source
"""


def counts(source: str) -> tuple[int, int]:
    nodes = re.findall(r"^\s*n\d+ \[", source, re.M)
    edges = re.findall(r"^\s*n\d+ -> n\d+", source, re.M)
    return len(nodes), len(edges)


def node_line(source: str, text: str) -> str:
    """The one node statement whose label contains ``text``."""
    lines = [ln for ln in source.splitlines() if re.match(r"\s*n\d+ \[", ln) and text in ln]
    assert len(lines) == 1, f"{len(lines)} nodes contain {text!r}"
    return lines[0]


def cluster_body(source: str, name: str) -> str:
    """Text of a cluster without nested clusters, from its header to its closing brace."""
    start = source.index(f'subgraph "cluster_SimpleConvNet.{name}" {{')
    return source[start : source.index("}", start)]


def simpleconvnet_source() -> str:
    scope: dict = {}
    exec(NET_SNIPPET, scope)
    return scope["SOURCE"]


@pytest.fixture
def dot_binary() -> None:
    if shutil.which("dot") is None:
        msg = "Graphviz 'dot' is not on PATH (apt-get install graphviz / brew install graphviz)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must render real images: {msg}")
        pytest.skip(msg)


# ----------------------------------------------------------------------------- content
def test_small_graph_nodes_edges_and_labels():
    x = Tensor(np.ones((2, 3), np.float32), requires_grad=True, name="x")
    w = Tensor(np.ones((2, 3)), requires_grad=True)  # float64, unnamed
    src = draw_graph((x * w).sum(axis=0)).source
    assert counts(src) == (6, 5)  # x, w, Mul, t2, Sum, root; 2 + 1 + 1 + 1 edges
    assert "n0 -> n2" in src and "n1 -> n2" in src and "n4 -> n5" in src
    assert "x\\n(2, 3) float32" in node_line(src, "x\\n")
    assert "t1\\n(2, 3) float64" in node_line(src, "t1\\n")
    assert "label=Mul " in src and 'label="Sum axis=(0,)"' in src
    assert "peripheries=2" in node_line(src, "output t3\\n(3,) float64")
    plain = draw_graph((x * w).sum(), show_shapes=False, show_dtypes=False).source
    assert "float" not in plain and "(2, 3)" not in plain and "label=loss " in plain


def test_op_labels_show_key_attributes():
    x = Tensor(np.zeros((1, 2, 8, 8), np.float32), requires_grad=True)
    w = Tensor(np.zeros((3, 2, 3, 3), np.float32))
    y = F.conv2d(x, w, stride=2, padding=1)
    assert op_label(y.op) == "Conv2d k=3x3 s=2 p=1"
    assert op_label(F.conv2d(x, w, stride=(1, 2)).op) == "Conv2d k=3x3 s=1x2 p=0"
    assert op_label(F.max_pool2d(x, 2).op) == "MaxPool2d k=2x2 s=2 p=0"
    assert op_label(x.sum(axis=0).op) == "Sum axis=(0,)"
    assert op_label(x.sum(axis=(1, 2), keepdims=True).op) == "Sum axis=(1, 2) keepdims=True"
    assert op_label((x**2).op) == "Pow exponent=2"


def test_tensor_kinds_are_visually_distinct():
    p = Tensor(np.ones(3, np.float32), requires_grad=True, name="scale")
    x = Tensor(np.ones(3, np.float32))
    src = draw_graph(((x * p) * 2.0).sum()).source
    styles = {
        kind: re.sub(r'label="[^"]*" ', "", node_line(src, text))[len("\tnX ") :]
        for kind, text in [("param", "scale"), ("input", "t0\\n"), ("tensor", "t2\\n"),
                           ("root", "loss"), ("op", "Sum axis")]
    }  # fmt: skip
    assert len(set(styles.values())) == 5, styles
    assert "2." in node_line(src, "t3\\n()")  # a scalar constant shows its value
    assert "ellipse" in styles["op"] and "peripheries=2" in styles["root"]


def test_show_data():
    x = Tensor(np.array([1.5, -2.0], np.float32), requires_grad=True, name="x")
    src = draw_graph(x.relu(), show_data=True).source
    assert "[ 1.5, -2. ]" in node_line(src, "x\\n")


# ----------------------------------------------------------------------------- SimpleConvNet
def test_simpleconvnet_graph_counts_and_clusters():
    src = simpleconvnet_source()
    assert counts(src) == (24, 23)  # 8 ops + 16 tensors; 15 op inputs + 8 op outputs
    assert src.count("subgraph cluster_SimpleConvNet {") == 1
    for name, op, params in [
        ("conv1", "Conv2d k=5x5 s=1 p=0", ["conv1.weight", "conv1.bias"]),
        ("relu1", "ReLU", []),
        ("pool1", "MaxPool2d k=2x2 s=2 p=0", []),
        ("flatten", "Reshape shape=(8, 4320)", []),
        ("fc1", "Linear", ["fc1.weight", "fc1.bias"]),
        ("relu2", "ReLU", []),
        ("fc2", "Linear", ["fc2.weight", "fc2.bias"]),
    ]:
        body = cluster_body(src, name)
        assert f"label={name} " in body and op in body
        assert all(p in body for p in params)
    assert "SoftmaxCrossEntropy" not in cluster_body(src, "fc2")  # the loss is outside the net
    assert "(30, 1, 5, 5) float32" in node_line(src, "conv1.weight")
    flat = draw_graph(SimpleConvNet(seed=0).loss(np.zeros((2, 1, 28, 28)), [0, 1]),
                      group_by_module=False).source  # fmt: skip
    assert "subgraph" not in flat and counts(flat) == (24, 23)


def test_gradient_norms_and_no_grad():
    net = SimpleConvNet(seed=0)
    x = np.random.default_rng(1).random((4, 1, 28, 28), dtype=np.float32)
    loss = net.loss(x, [1, 2, 3, 4])
    src = draw_graph(loss, show_grads=True).source  # the drawing runs its own backward ...
    assert all(p.grad is None for p in net.parameters())  # ... and touches no .grad
    loss.backward(retain_graph=True)
    norm = np.linalg.norm(net.fc2.bias.grad)
    assert f"|grad| = {norm:.4e}" in node_line(src, "fc2.bias")
    assert src.count("|grad| = ") == 6 + 8 and "no grad" not in src
    assert "|grad| = 1.0000e+00" in node_line(src, "loss")  # d loss / d loss
    assert draw_graph(loss, show_grads=True).source == src  # the same after backward
    # an intermediate: the logits' gradient is (softmax - onehot) / N
    logits = net.predict(x).data.astype(np.float64)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(4), [1, 2, 3, 4]] -= 1
    assert f"|grad| = {np.linalg.norm(p / 4):.3e}"[:14] in src
    # Two roots: the norms are those of their sum; a zero gradient that was reached is not
    # "no grad", and an input whose op returns no gradient for it gets "no grad".
    a = Tensor(np.ones(2, np.float32), requires_grad=True, name="a")
    b = Tensor(np.ones(2, np.float32), requires_grad=True, name="b")
    z = Tensor(np.ones(2, np.float32), requires_grad=True, name="z")
    first, second = (a * 3.0 + z * 0.0).sum(), (b * 2.0).sum()
    src = draw_graph(first, second, show_grads=True).source
    assert f"|grad| = {np.sqrt(8):.4e}" in node_line(src, "b\\n")
    assert f"|grad| = {np.sqrt(18):.4e}" in node_line(src, "a\\n")
    assert "|grad| = 0.0000e+00" in node_line(src, "z\\n")
    assert src.count("peripheries=2") == 2
    src = draw_graph((VizTestNoGrad.apply(a) * 2.0).sum(), show_grads=True).source
    assert "no grad" in node_line(src, "a\\n") and src.count("|grad| = ") == 3


class VizTestNoGrad(Function):
    """Identity whose backward gives no gradient (as if the input were constant)."""

    def forward(self, x):
        return x.copy()

    def backward(self, gy):
        return None


def test_highlight_draws_the_op_red():
    x = Tensor(np.ones(3, np.float32), requires_grad=True)
    y = x.exp()
    src = draw_graph(y.log(), highlight=[y.op]).source
    assert "color=red" in node_line(src, "label=Exp") and "red" not in node_line(src, "label=Log")


# ----------------------------------------------------------------------------- determinism, scale
def test_dot_is_byte_identical_across_builds_and_processes():
    src = simpleconvnet_source()
    assert simpleconvnet_source() == src
    code = NET_SNIPPET + "\nimport sys; sys.stdout.write(SOURCE)"
    root = str(Path(__file__).resolve().parents[1])
    for hashseed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hashseed, "PYTHONPATH": root}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, check=True)
        assert out.stdout.decode() == src


def test_20000_op_chain_without_recursion():
    y = x = Tensor(np.ones(3, np.float32), requires_grad=True)
    for _ in range(20_000):
        y = -y
    start = time.perf_counter()
    src = draw_graph(y).source
    elapsed = time.perf_counter() - start
    assert counts(src) == (40_001, 40_000)
    assert elapsed < 15, f"DOT for a 20,000-op chain took {elapsed:.1f} s"
    assert x.grad is None


# ----------------------------------------------------------------------------- files and errors
def test_render_dot_needs_no_binary_and_missing_dot_is_one_clear_error(tmp_path, monkeypatch):
    loss = (Tensor(np.ones(3, np.float32), requires_grad=True) * 2.0).sum()
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    path = render_graph(loss, tmp_path / "g.dot")
    assert path.read_text().startswith("digraph tinygrad_cnn {")
    with pytest.raises(GraphvizNotFoundError) as info:
        render_graph(loss, tmp_path / "g.svg")
    msg = str(info.value)
    assert "'dot'" in msg and "apt-get install graphviz" in msg and "brew install graphviz" in msg
    assert "conda install graphviz" in msg and isinstance(info.value, RuntimeError)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty-bin", "g.dot"]  # no leftovers
    with pytest.raises(ValueError, match=r"\.svg"):
        render_graph(loss, tmp_path / "g.jpeg")


def test_render_svg_png_pdf(tmp_path, dot_binary):
    loss = SimpleConvNet(seed=0).loss(np.zeros((2, 1, 28, 28), np.float32), [3, 4])
    assert render_graph(loss, tmp_path / "g.svg").read_text().count("<svg") == 1
    assert render_graph([loss], tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"
    assert loss.plot(str(tmp_path / "g.pdf")).read_bytes()[:4] == b"%PDF"
    assert "<svg" in loss._repr_svg_()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.pdf", "g.png", "g.svg"]


def test_freed_graph_raises_with_advice():
    x = Tensor(np.ones(3, np.float32), requires_grad=True)
    loss = (x * x).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match=r"retain_graph=True"):
        draw_graph(loss)
    with pytest.raises(ValueError, match="rankdir"):
        draw_graph((x * 2.0).sum(), rankdir="UP")


def test_plot_module_and_graph_command(tmp_path, capsys):
    net = SimpleConvNet(seed=0)
    x = np.random.default_rng(2).random((2, 1, 28, 28), dtype=np.float32)
    src = plot_module(net, x, tmp_path / "m.dot", t=[0, 1], show_grads=True).read_text()
    assert src.count("|grad| = ") == 6 + 8 and net.conv1.weight.grad is None
    assert "SoftmaxCrossEntropy" not in plot_module(net, x, tmp_path / "p.dot").read_text()
    assert main(["graph", "--grads", "--out", str(tmp_path / "cli.dot")]) == 0
    out = capsys.readouterr().out
    assert "24 nodes, 23 edges" in out and str(tmp_path / "cli.dot") in out
    assert (tmp_path / "cli.dot").read_text().count("|grad| = ") == 6 + 8


class VizTestScale(Function):
    """A user op with a key attribute, to check that labels work for any Function."""

    attr_names = ("factor",)

    def forward(self, x):
        return x * self.factor

    def backward(self, gy):
        return gy * self.factor


def test_user_op_label():
    x = Tensor(np.ones(2, np.float32), requires_grad=True)
    src = draw_graph(VizTestScale.apply(x, factor=0.5)).source
    assert 'label="VizTestScale factor=0.5"' in src and counts(src) == (3, 2)
