"""The graph explorer page without a browser: self-contained, correct statistics, stable ids,
the engine's backward order, clear errors, atomic writes. (tests/test_explore_browser.py
drives the page in chromium.)"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil

import numpy as np
import pytest

from tinygrad_cnn import Tensor, no_grad
from tinygrad_cnn.audit import audit_graph
from tinygrad_cnn.backprop import toposort
from tinygrad_cnn.cli import main
from tinygrad_cnn.explore import explore, explore_html, layout, page_data, record_sites
from tinygrad_cnn.explore.stats import summarize
from tinygrad_cnn.nn import SimpleConvNet
from tinygrad_cnn.viz import explore as viz_explore
from tinygrad_cnn.viz import node_ids


@pytest.fixture(autouse=True)
def dot_binary() -> None:
    if shutil.which("dot") is None:
        msg = "Graphviz 'dot' is not on PATH (apt-get install graphviz / brew install graphviz)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must lay out real pages: {msg}")
        pytest.skip(msg)


def net_loss(seed: int = 0) -> tuple[SimpleConvNet, Tensor]:
    rng = np.random.default_rng(seed)
    net = SimpleConvNet(seed=0)
    return net, net.loss(rng.random((4, 1, 28, 28), dtype=np.float32), np.arange(4))


def data_of(page: str) -> dict:
    text = re.search(r'<script id="explorer-data" type="application/json">(.*?)</script>', page,
                     re.S).group(1)  # fmt: skip
    return json.loads(text)


def unpack(packed: list) -> dict:
    keys = ("n", "zeros", "nan", "inf", "min", "max", "mean", "std", "hist")
    return dict(zip(keys, packed, strict=False))


def test_page_is_self_contained(tmp_path):
    _, loss = net_loss()
    page = explore(loss, tmp_path / "g.html").read_text()
    assert page.startswith("<!doctype html>") and "<script>" in page and "<style>" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "<link" not in page and "@import" not in page and "url(http" not in page
    assert "function render(" in page  # the script is inlined, not referenced


def test_summarize_known_array():
    a = np.array([[0.0, 1.0, 2.0], [3.0, np.nan, np.inf]], np.float32)
    s = summarize(a)
    assert (s["n"], s["nan"], s["inf"]) == (6, 1, 1)
    assert s["zeros"] == pytest.approx(1 / 6, abs=1e-4)
    assert (s["min"], s["max"], s["mean"]) == (0.0, 3.0, 1.5)
    assert s["std"] == pytest.approx(np.std([0, 1, 2, 3]), rel=1e-3)
    assert sum(s["hist"]) == 4 and s["hist"][0] == 1 and s["hist"][-1] == 1
    assert summarize(np.full(3, 7.0))["hist"] == [3]
    assert "min" not in summarize(np.array([np.nan]))


def test_node_ids_are_stable_and_match_viz():
    pages = [explore_html(net_loss()[1]) for _ in range(2)]
    assert pages[0] == pages[1]  # byte-identical for the same graph
    _, loss = net_loss()
    op_ids, t_ids = node_ids(list(toposort(loss)))
    data = data_of(pages[0])
    conv = op_ids[id(loss.op.parents[0].op.parents[0].op.parents[0].op.parents[0].op.parents[0]
                     .op.parents[0].op.parents[0].op)]  # fmt: skip
    assert data["nodes"][conv]["label"] == "Conv2d k=5x5 s=1 p=0"
    assert data["nodes"][conv]["out"] == ["(4, 30, 24, 24)", "float32"]
    assert set(data["nodes"]) == set(op_ids.values()) | set(t_ids.values())
    drawn = {n[0] for v in data["views"].values() for n in v["nodes"]}
    assert set(data["nodes"]) <= drawn


def test_statistics_and_gradients_match_the_arrays():
    net, loss = net_loss()
    data = page_data([loss])
    loss.backward()
    w = net.conv1.weight
    node = next(n for n in data["nodes"].values() if n.get("name") == "conv1.weight")
    assert node["k"] == "param" and node["module"] == "SimpleConvNet.conv1"
    got, grad = unpack(node["stats"]), unpack(node["grad"])
    assert got["min"] == pytest.approx(w.numpy().min(), rel=1e-3)
    assert got["std"] == pytest.approx(w.numpy().std(), rel=1e-3)
    assert grad["mean"] == pytest.approx(w.grad.mean(), rel=1e-3, abs=1e-9)
    assert grad["max"] == pytest.approx(w.grad.max(), rel=1e-3)
    assert sum(grad["hist"]) == w.size


def test_backward_order_is_the_engines_and_edges_carry_norms():
    _, loss = net_loss()
    op_ids, t_ids = node_ids(list(toposort(loss)))
    data = page_data([loss])
    engine = [op_ids[id(t.op)] for t in reversed(toposort(loss)) if t.op is not None]
    assert data["order"] == engine and len(engine) == 8
    w_id = t_ids[id(loss.op.parents[0].op.parents[2])]  # fc2.bias -> Linear
    key = f"{w_id}>{op_ids[id(loss.op.parents[0].op)]}"
    assert data["norms"][key] > 0


def test_audit_verdicts_and_creation_sites():
    with record_sites():
        _, loss = net_loss()
    data = page_data([loss], audit=audit_graph(loss))
    ops = [n for n in data["nodes"].values() if n["k"] == "op"]
    assert all(n["audit"]["status"] == "ok" for n in ops)
    assert all(re.search(r"test_explore\.py:\d+ in net_loss$", n["site"]) for n in ops)


def test_bad_arguments_give_clear_errors(tmp_path):
    _, loss = net_loss()
    with pytest.raises(TypeError, match="root must be a Tensor or a list of Tensors, got ndarray"):
        explore_html(np.ones(3))
    with pytest.raises(TypeError, match="root 1 must be a Tensor, got int"):
        explore_html([loss, 3])
    with pytest.raises(ValueError, match=r"must end in \.html"):
        explore(loss, tmp_path / "g.svg")
    with pytest.raises(TypeError, match="audit must be an AuditReport, got dict"):
        explore_html(loss, audit={})
    other = Tensor(np.ones(3, np.float32), requires_grad=True)
    with pytest.raises(ValueError, match="audit report is of another graph"):
        explore_html(loss, audit=audit_graph((other * 2.0).sum()))
    with pytest.raises(ValueError, match="at least one root"):
        explore_html([])
    loss.backward()
    with pytest.raises(RuntimeError, match="freed by backward"):
        explore_html(loss)


def test_file_is_written_atomically(tmp_path):
    path = tmp_path / "g.html"
    path.write_text("old")
    _, loss = net_loss()
    loss.backward()  # freed: making the page fails before anything is written
    with pytest.raises(RuntimeError):
        explore(loss, path)
    assert path.read_text() == "old"
    assert explore(net_loss()[1], path) == path and path.read_text().startswith("<!doctype")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.html"]  # no temporary left
    (tmp_path / "d.html").mkdir()
    with pytest.raises(ValueError, match="d.html' is a folder; give the .html file to write"):
        explore(net_loss()[1], tmp_path / "d.html")
    with pytest.raises(ValueError, match=r"'new/' is a folder.*'new/graph.html'"):
        explore(net_loss()[1], "new/")  # a trailing slash says folder even before it exists


def test_large_chain_is_split_into_views(monkeypatch):
    monkeypatch.setattr(layout, "FAN", 10)
    monkeypatch.setattr(layout, "VIEW_LIMIT", 80)
    y = Tensor(np.ones(3, np.float32), requires_grad=True, name="x")
    for i in range(300):
        y = y * 1.01 if i % 2 else y.relu()
    data = page_data([y.sum()])
    views = data["views"]
    assert len(views) > 3 and len(data["order"]) == 301
    for vid, view in views.items():
        drawn = {n[0] for n in view["nodes"]}
        assert len(drawn) <= 80 + 20, vid  # the limit, plus stubs of outside neighbours
        for portal in view["portals"]:
            assert portal in views and portal in drawn
    for nid, node in data["nodes"].items():
        assert nid in {n[0] for n in views[node.get("v", node["g"])]["nodes"]}, nid
    chunks = [g for g in data["groups"].values() if g["kind"] == "chunk"]
    assert chunks and max(len(g["children"]) for g in data["groups"].values()) <= 10


def test_repr_html_cli_and_viz_delegate(tmp_path, capsys):
    _, loss = net_loss()
    html = loss._repr_html_()
    assert html.startswith("<iframe srcdoc=") and "&lt;script id=&quot;explorer-data" in html
    assert Tensor([1.0])._repr_html_() is None
    assert viz_explore(loss, tmp_path / "v.html").read_text() == explore_html(loss)
    assert main(["graph", "--html", str(tmp_path / "c.html")]) == 0
    assert "interactive explorer of SimpleConvNet" in capsys.readouterr().out
    assert data_of((tmp_path / "c.html").read_text())["title"] == "SimpleConvNet loss graph"


def test_a_leaf_or_a_no_grad_result_is_refused_not_drawn_alone(tmp_path):
    net, _ = net_loss()
    with no_grad():
        quiet = net.loss(np.ones((1, 1, 28, 28), np.float32), np.arange(1))
    leaf = Tensor(np.ones(3, np.float32), requires_grad=True)
    for root in (leaf, quiet, [net_loss()[1], leaf]):
        with pytest.raises(ValueError, match=r"explore: root.* is a leaf tensor.*no_grad"):
            explore(root, tmp_path / "g.html")
    assert list(tmp_path.iterdir()) == []


def test_argument_types_are_checked_before_anything_else(tmp_path):
    _, loss = net_loss()
    with pytest.raises(TypeError, match=r"explore: root must be .* got the path 'g.html'; the "
                       r"root comes first"):  # fmt: skip
        viz_explore("g.html", loss)
    with pytest.raises(TypeError, match=r"explore: path must be a str or os.PathLike, got bytes"):
        viz_explore(loss, b"g.html")
    with pytest.raises(TypeError, match=r"explore: path must be a str or os.PathLike, got int"):
        viz_explore(loss, 3)
    with pytest.raises(TypeError, match="explore: title must be a str, got int"):
        viz_explore(loss, tmp_path / "g.html", title=3)
    with pytest.raises(TypeError):  # audit and title are keyword-only
        viz_explore(loss, tmp_path / "g.html", None)
    params = inspect.signature(viz_explore).parameters
    assert params["audit"].kind is params["title"].kind is inspect.Parameter.KEYWORD_ONLY
    assert "audit : AuditReport" in viz_explore.__doc__ and "title : str" in viz_explore.__doc__
    assert list(tmp_path.iterdir()) == []


def test_tilde_is_expanded_and_missing_folders_are_made_like_every_saver(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    written = viz_explore(net_loss()[1], "~/graphs/g.html")
    assert written == tmp_path / "home" / "graphs" / "g.html" and written.is_file()
    assert not (tmp_path / "~").exists()


def test_group_labels_say_1_op_and_leave_out_empty_ports(monkeypatch):
    monkeypatch.setattr(layout, "FAN", 10)
    y = Tensor(np.ones(3, np.float32), requires_grad=True, name="x")
    for _ in range(10):
        y = y.relu()
    groups = page_data([y.sum()])["groups"]  # chunks of ops 1-10 and 11-11
    lines = [line for g in groups.values() for line in g["label"].split("\n")]
    assert "1 op" in lines and "1 ops" not in lines and "10 ops" in lines
    assert not [line for line in lines if line.strip() in ("in", "out")]


def test_notebook_does_not_embed_a_huge_graph():
    y = Tensor(np.ones(2, np.float32), requires_grad=True)
    for _ in range(1000):
        y = y * 0.5
    html = y.sum()._repr_html_()  # 1001 ops: a note, not an 1.3 MB iframe
    assert "<iframe" not in html and "1001 ops" in html and "explore(t," in html
    assert len(html) < 2000 and "Tensor" in html


def test_cli_errors_speak_of_the_option_and_html_writes_only_the_page(tmp_path, capsys,
                                                                     monkeypatch):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("")
    (tmp_path / "adir").mkdir()
    cases = {
        "afile/g.html": "--html: cannot write afile/g.html: afile is not a folder",
        "adir/": "--html: path 'adir/' is a folder",
        "g.svg": "--html: path must end in",
    }
    for value, said in cases.items():
        assert main(["graph", "--html", value]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"tinygrad-cnn: error: {said}"), err
        assert "explore:" not in err and "atomic_write" not in err and "[Errno" not in err
    assert main(["graph", "--html", "g.html", "--grads"]) == 2
    assert "--grads labels the --out picture" in capsys.readouterr().err
    assert main(["graph", "--html", "g.html"]) == 0
    capsys.readouterr()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "afile", "g.html"]  # no .svg
    with pytest.raises(SystemExit):
        main(["graph", "--help"])
    shown = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "a picture (--out, default graph.svg) or an interactive page (--html)" in shown


def test_the_depth_field_says_what_empty_means():
    _, loss = net_loss()
    page = explore_html(loss)
    assert 'id="depth" type="number" min="0" value="" placeholder="all"' in page
    assert "empty: every level" in page
