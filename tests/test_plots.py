"""The pictures: each a valid PNG of its documented size, with the right numbers behind it."""

from __future__ import annotations

import numpy as np
import pytest

from tinygrad_cnn import Tensor, no_grad
from tinygrad_cnn.data import load_mnist_mini
from tinygrad_cnn.models import SimpleConvNet
from tinygrad_cnn.nn import Linear, Sequential, predict_classes
from tinygrad_cnn.plots import (
    collect_activations,
    confusion_matrix,
    filter_grid,
    plot_activations,
    plot_confusion,
    plot_confusion_matrix,
    plot_filters,
    plot_mistakes,
)

image = pytest.importorskip("matplotlib.image")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def data():
    _, (xt, tt) = load_mnist_mini()
    return xt[:120], tt[:120]


@pytest.fixture
def net():
    return SimpleConvNet(seed=0, weight_init_std="he", conv_param={"filter_num": 6}, hidden_size=20)


def read_png(path, height: int, width: int) -> np.ndarray:
    """Check the PNG signature and pixel size; return the pixels (H, W, 4)."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = image.imread(path)
    assert pixels.shape == (height, width, 4)
    return pixels


def dark_fraction(pixels: np.ndarray) -> float:
    return float((pixels[..., :3].mean(axis=2) < 0.5).mean())


# --------------------------------------------------------------------------------- filters
def test_filter_grid_has_one_tile_per_filter_each_scaled_to_unit_range():
    w = np.random.default_rng(0).standard_normal((7, 1, 5, 4)).astype(np.float32)
    grid = filter_grid(w)  # 3 columns, 3 rows, NaN separators
    assert grid.shape == (3 * 6 - 1, 3 * 5 - 1)
    tiles = [grid[r * 6 : r * 6 + 5, c * 5 : c * 5 + 4] for r in range(3) for c in range(3)]
    filled = [tile for tile in tiles if not np.isnan(tile).all()]
    assert len(filled) == 7
    for k, tile in enumerate(filled):
        expected = (w[k, 0] - w[k].min()) / (w[k].max() - w[k].min())
        np.testing.assert_allclose(tile, expected, rtol=1e-6)
    assert np.isnan(grid[5, :]).all() and np.isnan(grid[:, 4]).all()  # separators


def test_plot_filters_writes_two_grids(tmp_path, net):
    before = net.conv1.weight.numpy().copy()
    after = before[::-1] * 2.0
    out = plot_filters(before, after, tmp_path / "filters.png")
    assert out["tiles"] == 6
    np.testing.assert_array_equal(out["before"], filter_grid(before))
    np.testing.assert_array_equal(out["after"], filter_grid(after))
    pixels = read_png(tmp_path / "filters.png", 500, 1000)
    assert dark_fraction(pixels) > 0.05  # the tiles are drawn, not a blank canvas


def test_plot_filters_rejects_bad_shapes(tmp_path):
    w = np.zeros((4, 1, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"plot_filters: before \(4, 1, 3, 3\) and after"):
        plot_filters(w, w[:2], tmp_path / "f.png")
    with pytest.raises(ValueError, match=r"filter_grid: .*\(4, 2, 3, 3\)"):
        plot_filters(np.zeros((4, 2, 3, 3)), np.zeros((4, 2, 3, 3)), tmp_path / "f.png")
    with pytest.raises(TypeError, match="filter_grid: w must be a numeric array"):
        filter_grid(np.array([["a"]]))
    assert not (tmp_path / "f.png").exists()


# -------------------------------------------------------------------------------- mistakes
def test_plot_mistakes_are_exactly_the_misclassified(tmp_path, net, data):
    x, t = data
    net.train()
    out = plot_mistakes(net, x, t, tmp_path / "mistakes.png", n=20, batch_size=50)
    pred = predict_classes(net, x)
    wrong = np.flatnonzero(pred != t)
    assert 20 < len(wrong) < len(x)  # an untrained net: mistakes, and some right answers
    np.testing.assert_array_equal(out["indices"], wrong)
    np.testing.assert_array_equal(out["predicted"], pred[wrong])
    np.testing.assert_array_equal(out["true"], t[wrong])
    with no_grad():
        logits = net(x).numpy().astype(np.float64)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(out["confidence"], probs[wrong].max(axis=1), rtol=1e-5)
    assert len(out["shown"]) == 20 and set(out["shown"]) <= set(wrong)
    shown_conf = probs[out["shown"]].max(axis=1)
    assert np.all(np.diff(shown_conf) <= 1e-7)  # most confident first
    assert shown_conf[-1] >= np.sort(probs[wrong].max(axis=1))[-20] - 1e-7
    assert net.training and net.conv1.training  # the caller's mode is given back
    pixels = read_png(tmp_path / "mistakes.png", 40 + 160 * 3, 1000)
    assert dark_fraction(pixels) > 0.02  # the digits are drawn


def test_plot_mistakes_one_hot_labels_and_no_mistakes(tmp_path, net, data):
    x, t = data
    a = plot_mistakes(net, x, np.eye(10, dtype=np.float32)[t], tmp_path / "a.png")
    b = plot_mistakes(net, x, t, tmp_path / "b.png")
    np.testing.assert_array_equal(a["indices"], b["indices"])
    pred = predict_classes(net, x)
    none = plot_mistakes(net, x, pred, tmp_path / "none.png")
    assert len(none["indices"]) == 0 and len(none["shown"]) == 0
    read_png(tmp_path / "none.png", 200, 1000)


def test_plot_mistakes_rejects_bad_input(tmp_path, net, data):
    x, t = data
    with pytest.raises(ValueError, match=r"plot_mistakes: labels t of shape \(5,\) for 120 images"):
        plot_mistakes(net, x, t[:5], tmp_path / "m.png")
    with pytest.raises(ValueError, match=r"plot_mistakes: x must be images .*\(120, 784\)"):
        plot_mistakes(net, x.reshape(120, -1), t, tmp_path / "m.png")
    with pytest.raises(ValueError, match="plot_mistakes: n must be a positive int"):
        plot_mistakes(net, x, t, tmp_path / "m.png", n=0)
    with pytest.raises(TypeError, match="plot_mistakes: labels t must be integers"):
        plot_mistakes(net, x, t.astype(np.float32), tmp_path / "m.png")
    with pytest.raises(TypeError, match="plot_mistakes: net must be a Module"):
        plot_mistakes(lambda z: z, x, t, tmp_path / "m.png")
    assert not (tmp_path / "m.png").exists()


# ------------------------------------------------------------------------------- confusion
def test_plot_confusion_counts_every_test_image(tmp_path, net, data):
    x, t = data
    m = plot_confusion(net, x, t, tmp_path / "confusion.png", batch_size=32)
    pred = predict_classes(net, x)
    direct = np.zeros((10, 10), np.int64)
    for true, p in zip(t.tolist(), pred.tolist(), strict=True):  # the oracle: a plain loop
        direct[true, p] += 1
    np.testing.assert_array_equal(m, direct)
    assert m.dtype == np.int64 and m.sum() == len(x)
    assert np.trace(m) == np.sum(pred == t)
    np.testing.assert_array_equal(plot_confusion_matrix(direct, tmp_path / "m2.png"), direct)
    read_png(tmp_path / "confusion.png", 550, 600)
    read_png(tmp_path / "m2.png", 550, 600)


def test_confusion_matrix_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"confusion_matrix: predicted labels span \[0, 10\]"):
        confusion_matrix([1, 2], [0, 10])
    with pytest.raises(ValueError, match=r"labels predicted of shape \(1,\) for 2 images"):
        confusion_matrix([1, 2], [0])
    with pytest.raises(ValueError, match=r"plot_confusion_matrix: .* square .*\(2, 3\)"):
        plot_confusion_matrix(np.zeros((2, 3), np.int64), tmp_path / "c.png")
    with pytest.raises(ValueError, match="non-negative integer counts"):
        plot_confusion_matrix(np.full((2, 2), 0.5), tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()


def test_labels_must_be_integers_or_one_hot_rows_of_the_class_count(tmp_path, net, data):
    x, t = data
    pred = predict_classes(net, x)
    bad = {
        "(N, 1)": t[:, None],
        "one-hot too narrow": np.eye(5, dtype=np.float32)[t % 5],
        "one-hot too wide": np.eye(12, dtype=np.float32)[t],
    }
    need = r"need integer labels \(N,\) = \(120,\) or one-hot rows \(N, 10\) = \(120, 10\)"
    for labels in bad.values():
        shape = rf"\({len(x)}, {labels.shape[1]}\)"
        with pytest.raises(
            ValueError, match=rf"confusion_matrix: labels true of shape {shape}.*{need}"
        ):
            confusion_matrix(labels, pred)
        with pytest.raises(
            ValueError, match=rf"confusion_matrix: labels predicted of shape {shape}"
        ):
            confusion_matrix(t, labels)
        with pytest.raises(ValueError, match=rf"plot_confusion: labels t of shape {shape}"):
            plot_confusion(net, x, labels, tmp_path / "c.png")
        with pytest.raises(ValueError, match=rf"plot_mistakes: labels t of shape {shape}"):
            plot_mistakes(net, x, labels, tmp_path / "m.png")
    with pytest.raises(
        ValueError, match=r"plot_mistakes: t labels span \[10, 19\], outside \[0, 10\)"
    ):
        plot_mistakes(net, x, t + 10, tmp_path / "m.png")  # would all count as mistakes
    with pytest.raises(ValueError, match=r"plot_confusion: t labels span \[-1, 8\]"):
        plot_confusion(net, x, t - 1, tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists() and not (tmp_path / "m.png").exists()
    one_hot = np.eye(10, dtype=np.float32)
    np.testing.assert_array_equal(confusion_matrix(one_hot[t], one_hot[pred]),
                                  confusion_matrix(t, pred))  # fmt: skip


# --------------------------------------------------------------------------------- formats
@pytest.mark.parametrize(
    "suffix, head", [(".svg", b"<?xml"), (".pdf", b"%PDF"), (".PNG", b"\x89PNG")]
)
def test_every_picture_is_written_in_the_format_its_suffix_names(tmp_path, net, data, suffix,
                                                                 head):  # fmt: skip
    x, t = data
    w = net.conv1.weight.numpy()
    acts = collect_activations(net, x[:10])
    draw = {
        "filters": lambda p: plot_filters(w, w, p),
        "mistakes": lambda p: plot_mistakes(net, x, t, p),
        "confusion": lambda p: plot_confusion(net, x, t, p),
        "matrix": lambda p: plot_confusion_matrix(np.eye(3, dtype=np.int64), p),
        "activations": lambda p: plot_activations(acts, acts, p),
    }
    for name, f in draw.items():
        f(tmp_path / f"{name}{suffix}")
        assert (tmp_path / f"{name}{suffix}").read_bytes()[: len(head)] == head, name
        for wrong in ("x.jpg", "x"):
            with pytest.raises(
                ValueError, match=rf"plot_\w+: '.*{wrong}' has .*\.png, \.svg or \.pdf"
            ):
                f(tmp_path / wrong)
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [suffix] * 5  # nothing else written


def test_the_trained_weights_alone_when_the_start_is_unknown(tmp_path, net, data):
    x, _ = data
    w = net.conv1.weight.numpy()
    out = plot_filters(None, w, tmp_path / "f.png")
    assert out["before"] is None and out["tiles"] == 6
    np.testing.assert_array_equal(out["after"], filter_grid(w))
    pixels = read_png(tmp_path / "f.png", 500, 1000)
    assert dark_fraction(pixels[:, :450]) == 0 < dark_fraction(pixels[:, 550:])  # left blank
    acts = collect_activations(net, x)
    h = plot_activations(None, acts, tmp_path / "a.png")
    assert h["relu1"]["first"] is None and h["relu1"]["last"].sum() == acts["relu1"].size


# ----------------------------------------------------------------------------- activations
def test_collect_activations_records_every_relu_and_removes_its_hooks(net, data):
    x, _ = data
    net.train()
    acts = collect_activations(net, x, batch_size=50)  # three batches, concatenated
    assert list(acts) == ["relu1", "relu2"]
    with no_grad():
        h1 = net.relu1(net.conv1(Tensor(x))).numpy()
        h2 = net.relu2(net.fc1(net.flatten(net.pool1(Tensor(h1))))).numpy()
    np.testing.assert_array_equal(acts["relu1"], h1.ravel())
    np.testing.assert_allclose(acts["relu2"], h2.ravel(), atol=1e-5)  # BLAS: per batch size
    assert all(m._forward_hooks == () for _, m in net.named_modules())
    assert net.training


def test_collect_activations_removes_hooks_when_forward_fails(net):
    with pytest.raises(ValueError):
        collect_activations(net, np.zeros((2, 1, 3, 3), np.float32))  # too small for 5x5
    assert all(m._forward_hooks == () for _, m in net.named_modules())
    with pytest.raises(ValueError, match="collect_activations: the network has no ReLU"):
        collect_activations(Sequential(Linear(3, 2)), np.zeros((2, 3), np.float32))
    with pytest.raises(TypeError, match="collect_activations: net must be a Module"):
        collect_activations(object(), np.zeros((2, 3)))


def test_plot_activations_counts_every_activation(tmp_path, net, data):
    x, _ = data
    first = collect_activations(net, x)
    net.fc1.weight.numpy()[...] *= 3.0  # another moment: different activations
    last = collect_activations(net, x)
    out = plot_activations(first, last, tmp_path / "activations.png", bins=20)
    assert list(out) == ["relu1", "relu2"]
    for name, h in out.items():
        assert h["edges"].shape == (21,) and h["first"].shape == h["last"].shape == (20,)
        assert h["first"].sum() == first[name].size and h["last"].sum() == last[name].size
        assert h["edges"][0] == 0.0  # ReLU outputs
        assert h["edges"][-1] == max(first[name].max(), last[name].max())
        np.testing.assert_array_equal(h["first"], np.histogram(first[name], h["edges"])[0])
    assert not np.array_equal(out["relu2"]["first"], out["relu2"]["last"])
    read_png(tmp_path / "activations.png", 550, 100 + 300 * 2)


def test_plot_activations_rejects_bad_input(tmp_path):
    a = {"relu1": np.ones(4)}
    with pytest.raises(ValueError, match=r"plot_activations: need the same .*\['relu1'\]"):
        plot_activations(a, {"relu2": np.ones(4)}, tmp_path / "a.png")
    with pytest.raises(ValueError, match="layer 'relu1' is empty or not finite"):
        plot_activations(a, {"relu1": np.array([1.0, np.nan])}, tmp_path / "a.png")
    with pytest.raises(ValueError, match="bins must be a positive int"):
        plot_activations(a, a, tmp_path / "a.png", bins=0)
    assert not (tmp_path / "a.png").exists()
    out = plot_activations(a, a, tmp_path / "a.png", bins=3)  # constant values still count
    assert out["relu1"]["first"].sum() == 4


def test_train_writes_the_pictures_and_plot_redraws_them(tmp_path, capsys):
    from tinygrad_cnn.cli import main

    out = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--limit", "300", "--quiet", "--out", str(out)]) == 0
    for name in ("filters.png", "mistakes.png", "confusion.png", "activations.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    for what in ("filters", "mistakes", "confusion", "activations"):
        target = tmp_path / f"{what}.png"
        args = ["plot", what, "--params", str(out / "params.npz"), "--out", str(target)]
        assert main(args) == 0
        assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "wrote" in capsys.readouterr().out
