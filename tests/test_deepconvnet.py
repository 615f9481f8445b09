"""The book's DeepConvNet (ch. 8): layout, gradients, training, parameter files and the CLI."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from oracles import conv2d_naive

from tinygrad_cnn.cli import main
from tinygrad_cnn.models import DeepConvNet, SimpleConvNet
from tinygrad_cnn.optim import Adam, get_optimizer
from tinygrad_cnn.picklesafe import load_book_pickle
from tinygrad_cnn.tensor import Tensor
from tinygrad_cnn.testing import check_vjp, module_gradcheck

BOOK_SHAPES = {
    "W1": (16, 1, 3, 3), "W2": (16, 16, 3, 3), "W3": (32, 16, 3, 3), "W4": (32, 32, 3, 3),
    "W5": (64, 32, 3, 3), "W6": (64, 64, 3, 3), "W7": (64 * 4 * 4, 50), "W8": (50, 10),
}  # fmt: skip


def images(n: int, seed: int = 0, dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, 28, 28)).astype(dtype)


def book_dict(seed: int = 0) -> dict[str, np.ndarray]:
    """Random float64 parameters in the book's layout, scaled like trained ones."""
    rng = np.random.default_rng(seed)
    params = {}
    for i in range(1, 9):
        w = BOOK_SHAPES[f"W{i}"]
        params[f"W{i}"] = rng.standard_normal(w) * np.sqrt(2 / np.prod(w[1:] if i <= 6 else w[:1]))
        params[f"b{i}"] = rng.standard_normal(w[0] if i <= 6 else w[1]) * 0.1
    return params


def book_predict(params: dict[str, np.ndarray], x: np.ndarray, ratio: float = 0.5) -> np.ndarray:
    """The book's ``DeepConvNet.predict(x, train_flg=False)`` in plain NumPy, independent of
    the package: the book's dropout multiplies by (1 - ratio) at test time."""

    def conv(x, w, b, pad):  # cross-correlation by sliding windows: (N, C, H, W) -> (N, OC, ...)
        xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        win = sliding_window_view(xp, w.shape[2:], axis=(2, 3))  # (N, C, OH, OW, KH, KW)
        return np.einsum("ncyxij,ocij->noyx", win, w) + b[None, :, None, None]

    def pool(x):  # 2x2, stride 2, even sizes: (N, C, H, W) -> (N, C, H/2, W/2)
        N, C, H, W = x.shape
        return x.reshape(N, C, H // 2, 2, W // 2, 2).max(axis=(3, 5))

    relu = lambda a: np.maximum(a, 0)  # noqa: E731
    h = x.astype(np.float64)
    for i, pad in zip(range(1, 7), (1, 1, 1, 2, 1, 1), strict=True):
        h = relu(conv(h, params[f"W{i}"], params[f"b{i}"], pad))
        h = pool(h) if i % 2 == 0 else h
    h = relu(h.reshape(len(h), -1) @ params["W7"] + params["b7"]) * (1 - ratio)
    return (h @ params["W8"] + params["b8"]) * (1 - ratio)


class FixedDraws:
    """Stands in for a Dropout's generator: ``random`` returns 1 where ``keep``, else 0."""

    def __init__(self, keep: np.ndarray) -> None:
        self.keep = keep

    def random(self, shape: tuple[int, ...]) -> np.ndarray:
        assert shape == self.keep.shape
        return self.keep.astype(np.float64)


def test_shapes_through_every_layer():
    net = DeepConvNet(seed=0)
    shapes = {}
    for name, m in net.named_modules():
        if name:
            m.register_forward_hook(lambda m, xs, y, name=name: shapes.update({name: y.shape}))
    y = net.predict(images(3))
    N = 3
    expected = {
        "conv1": (N, 16, 28, 28), "relu1": (N, 16, 28, 28), "conv2": (N, 16, 28, 28),
        "relu2": (N, 16, 28, 28), "pool1": (N, 16, 14, 14), "conv3": (N, 32, 14, 14),
        "relu3": (N, 32, 14, 14), "conv4": (N, 32, 16, 16), "relu4": (N, 32, 16, 16),
        "pool2": (N, 32, 8, 8), "conv5": (N, 64, 8, 8), "relu5": (N, 64, 8, 8),
        "conv6": (N, 64, 8, 8), "relu6": (N, 64, 8, 8), "pool3": (N, 64, 4, 4),
        "flatten": (N, 1024), "fc1": (N, 50), "relu7": (N, 50), "dropout1": (N, 50),
        "fc2": (N, 10), "dropout2": (N, 10),
    }  # fmt: skip
    assert list(shapes.items()) == list(expected.items())  # the order of the book's layers too
    assert y.shape == (N, 10) and y.dtype == np.float32


def test_eight_weight_layers_with_the_books_shapes_and_he_scales():
    net = DeepConvNet(seed=0)
    params = dict(net.named_parameters())
    names = [f"conv{i}" for i in range(1, 7)] + ["fc1", "fc2"]
    assert list(params) == [f"{n}.{k}" for n in names for k in ("weight", "bias")]
    assert sum(p.size for p in params.values()) == 123_552
    book = net.book_params()
    assert {k: book[k].shape for k in BOOK_SHAPES} == BOOK_SHAPES
    # the book's weight_init_scales: sqrt(2 / fan-in) with fan-in 1*9, 16*9, ..., 64*4*4, 50
    for name, fan_in in [("conv2", 144), ("conv6", 576), ("fc1", 1024)]:
        w = params[f"{name}.weight"].numpy()
        assert w.dtype == np.float32
        assert abs(w.std() / np.sqrt(2 / fan_in) - 1) < 0.03, name
    assert abs(book["W8"].std() / np.sqrt(2 / 50) - 1) < 0.1  # ours is k**2 = 1/4 of it
    assert all(not params[f"{n}.bias"].numpy().any() for n in names)


def test_the_seed_fixes_weights_and_dropout_masks():
    x = images(4)
    a, b = DeepConvNet(seed=3), DeepConvNet(seed=3)
    pairs = zip(a.parameters(), b.parameters(), strict=True)
    assert all(np.array_equal(p.numpy(), q.numpy()) for p, q in pairs)
    first = a.predict(x, train_flg=True).numpy()
    np.testing.assert_array_equal(first, b.predict(x, train_flg=True).numpy())
    assert not np.array_equal(first, a.predict(x, train_flg=True).numpy())  # fresh masks
    assert not np.array_equal(first, DeepConvNet(seed=4).predict(x, train_flg=True).numpy())
    # without dropout the prediction is fixed, and predict leaves every module's mode alone
    np.testing.assert_array_equal(a.predict(x).numpy(), a.predict(x).numpy())
    assert a.training and a.dropout1.training
    a.eval()
    np.testing.assert_array_equal(
        a.loss(x, [0, 1, 2, 3]).numpy(), b.eval().loss(x, [0, 1, 2, 3]).numpy()
    )
    assert not any(m.training for _, m in a.named_modules())


def test_every_parameter_gradient_of_a_small_float64_copy():
    small = {"filter_num": 2}
    net = DeepConvNet(
        (1, 8, 8), *[small] * 6, hidden_size=4, output_size=3, seed=0, dtype=np.float64
    ).eval()  # dropout off: the loss is a fixed function of the parameters
    rng = np.random.default_rng(1)
    # non-zero biases: with zero ones a padded window of zeros lands exactly on ReLU's kink
    state = net.state_dict()
    net.load_state_dict({k: rng.standard_normal(v.shape) if k.endswith("bias") else v
                         for k, v in state.items()})  # fmt: skip
    x = rng.random((3, 1, 8, 8))
    assert net.predict(x).shape == (3, 3)
    assert module_gradcheck(net, lambda: net.loss(x, [0, 2, 1]))


def test_input_gradient_of_the_full_network_by_the_dot_product_test():
    net = DeepConvNet(seed=0, dtype=np.float64).eval()
    x = images(2, dtype=np.float64)
    assert check_vjp(lambda t: net.loss(t, [3, 7]), Tensor(x, requires_grad=True)) < 1e-6


def test_loss_decreases_on_a_fixed_batch():
    from tinygrad_cnn.data import load_mnist_mini

    (x, t), _ = load_mnist_mini()
    x, t = x[:32], t[:32]
    net = DeepConvNet(seed=0).eval()  # without dropout, so each step's loss is comparable
    opt = get_optimizer("adam", net.parameters(), lr=1e-3)
    losses = []
    for _ in range(10):
        opt.zero_grad()
        loss = net.loss(x, t)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    after = net.loss(x, t).item()
    assert 2.0 < losses[0] < 2.8  # about ln 10: the book's He scales, W8 included
    assert after < 0.5 * losses[0] and all(np.diff(losses) < 0), losses


def test_save_and_load_round_trip_under_any_name(tmp_path):
    net, x = DeepConvNet(seed=0), images(5)
    for name, book in [("weights.pkl", False), ("weights.npz", True), ("noext", True)]:
        net.save_params(tmp_path / name, book=book)
        other = DeepConvNet(seed=1)
        other.load_params(tmp_path / name)
        for (k, p), (_, q) in zip(net.named_parameters(), other.named_parameters(), strict=True):
            np.testing.assert_array_equal(p.numpy(), q.numpy(), err_msg=f"{name}: {k}")
        np.testing.assert_array_equal(net.predict(x).numpy(), other.predict(x).numpy())
    assert sorted(load_book_pickle(tmp_path / "noext")) == sorted(DeepConvNet.BOOK_KEYS)


def test_the_books_pickle_predicts_what_the_books_network_predicts(tmp_path):
    params, x = book_dict(), images(4, dtype=np.float64)
    path = tmp_path / "deep_convnet_params.pkl"
    path.write_bytes(pickle.dumps(params, protocol=2))  # the book saves with pickle.dump
    net = DeepConvNet(dtype=np.float64)
    net.load_params(path)
    # first layer against the loop oracle, then the whole network against the book's forward
    np.testing.assert_allclose(
        net.conv1(x).numpy(),
        conv2d_naive(x, params["W1"], params["b1"], 1, 1),
        rtol=1e-12,
        atol=1e-15,
    )
    np.testing.assert_allclose(net.predict(x).numpy(), book_predict(params, x), rtol=1e-10)
    # and back: book_params and save_params(book=True) give the book's arrays exactly
    book = net.book_params()
    assert all(np.array_equal(book[k], params[k]) for k in params)
    net.save_params(tmp_path / "again.pkl", book=True)
    again = load_book_pickle(tmp_path / "again.pkl")
    assert all(np.array_equal(again[k], params[k]) for k in params)


def test_the_books_training_forward_is_reproduced_too(tmp_path):
    """With the book's masks, the book's train-mode logits equal ours (dropout conventions)."""
    params, x = book_dict(1), images(3, dtype=np.float64)
    path = tmp_path / "p.pkl"
    path.write_bytes(pickle.dumps(params, protocol=4))
    net = DeepConvNet(dtype=np.float64, seed=0)
    net.load_params(path)
    masks = [np.random.default_rng([0, i]).random((3, n)) > 0.5 for i, n in enumerate((50, 10))]
    for drop, mask in zip((net.dropout1, net.dropout2), masks, strict=True):
        drop.rng = FixedDraws(mask)  # Dropout keeps where rng.random(shape) >= p
    ours = net.predict(x, train_flg=True).numpy()
    feats = x  # the layers before fc1 have no dropout: run them as they are
    for name, layer in list(net.named_modules())[1:]:
        if name == "fc1":
            break
        feats = layer(feats)
    feats = feats.numpy()
    hidden = np.maximum(feats @ params["W7"] + params["b7"], 0) * masks[0]
    book = (hidden @ params["W8"] + params["b8"]) * masks[1]
    np.testing.assert_allclose(ours, book, rtol=1e-10, atol=1e-12)


def test_book_dropout_scales_at_test_time_and_keeps_units_unscaled_in_training():
    from tinygrad_cnn.nn import Dropout

    x = Tensor(np.arange(1, 9, dtype=np.float32).reshape(2, 4), requires_grad=True)
    keep = np.array([[1, 0, 1, 1], [0, 0, 1, 0]], bool)
    book, inverted = Dropout(0.25, inverted=False), Dropout(0.25)
    for drop in (book, inverted):
        drop.rng = FixedDraws(keep)
    y = book(x)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y.numpy(), x.numpy() * keep)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, keep.astype(np.float32))
    np.testing.assert_allclose(inverted(x).numpy(), x.numpy() * keep / np.float32(0.75), rtol=1e-6)
    book.eval()
    inverted.eval()
    y = book(x)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y.numpy(), x.numpy() * np.float32(0.75))
    np.testing.assert_array_equal(inverted(x).numpy(), x.numpy())


def test_bad_files_and_inputs_are_refused_with_clear_errors(tmp_path):
    net = DeepConvNet(seed=0)
    before = [p.numpy().copy() for p in net.parameters()]
    params = book_dict()
    del params["b8"]
    (tmp_path / "missing.pkl").write_bytes(pickle.dumps(params))
    with pytest.raises(ValueError, match=r"not the book's DeepConvNet parameters \(missing: b8\)$"):
        net.load_params(tmp_path / "missing.pkl")
    params = book_dict()
    params["W7"] = params["W7"][:100]
    (tmp_path / "shape.pkl").write_bytes(pickle.dumps(params))
    with pytest.raises(ValueError, match=r"W7 has shape \(100, 50\)"):  # the book's names
        net.load_params(tmp_path / "shape.pkl")
    assert all(np.array_equal(a, p.numpy()) for a, p in zip(before, net.parameters(), strict=True))
    with pytest.raises(ValueError, match=r"DeepConvNet: images must be \(N, 1, 28, 28\), got"):
        net.predict(np.zeros((2, 1, 32, 32), np.float32))
    with pytest.raises(ValueError, match="too small for conv"):
        DeepConvNet((1, 1, 1))
    with pytest.raises(ValueError, match="conv_param_2 has unknown keys"):
        DeepConvNet(conv_param_2={"filters": 8})
    with pytest.raises(ValueError, match="book_params: this DeepConvNet has 30 parameters"):
        DeepConvNet(batch_norm=True).book_params()  # the book's network has no batch norm


def test_cli_trains_evaluates_draws_and_audits_deepconvnet(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--model", "deepconvnet", "--epochs", "1", "--limit", "200", "--quiet"]
    assert main([*argv, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "training DeepConvNet" in text and "init he" in text and "final test accuracy" in text
    for name in ("params.npz", "history.json", "checkpoint.npz", "accuracy.png"):
        assert (out / name).is_file(), name
    params = out / "params.npz"
    assert main(["evaluate", "--model", "deepconvnet", "--params", str(params)]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[-10:]]
    assert np.array([[int(v) for v in row[1:]] for row in rows]).sum() == 2000
    assert main(["evaluate", "--model", "simpleconvnet", "--params", str(params)]) == 2
    assert "holds DeepConvNet parameters" in capsys.readouterr().err  # SimpleConvNet can't read it
    assert main(["evaluate", "--params", str(params)]) == 0  # without --model: the file's model
    capsys.readouterr()

    graph = ["graph", "--model", "deepconvnet", "--params", str(params)]
    assert main([*graph, "--out", str(tmp_path / "g.dot")]) == 0
    text = capsys.readouterr().out
    assert "DeepConvNet (" in text and (tmp_path / "g.dot").read_text().count("Conv2d k=3x3") == 6
    assert main(["audit", "--model", "deepconvnet", "--params", str(params)]) == 0
    text = capsys.readouterr().out
    assert "gradient audit of DeepConvNet" in text and "0 failed" in text


def test_the_batch_norm_variant_trains_and_keeps_its_statistics(tmp_path):
    net = DeepConvNet(batch_norm=True, seed=0)
    names = [n for n, _ in net.named_modules() if n.startswith("norm")]
    assert names == [f"norm{i}" for i in range(1, 8)]
    assert {k for k in net.state_dict() if "running" in k} == {
        f"norm{i}.running_{s}" for i in range(1, 8) for s in ("mean", "var")
    }
    x = np.random.default_rng(0).random((8, 1, 28, 28), dtype=np.float32)
    t = np.arange(8) % 10
    opt = Adam(net.parameters(), lr=1e-3)
    net.eval()  # dropout off, so the loss is a function of the parameters alone
    net.norm1.train()  # batch statistics in norm1 (the others use their running ones)
    before = net.loss(x, t).item()
    for _ in range(5):
        opt.zero_grad()
        net.loss(x, t).backward()
        opt.step()
    assert net.loss(x, t).item() < before
    assert not np.allclose(net.norm1.running_mean, 0)  # updated while training
    net.save_params(tmp_path / "bn.npz")
    again = DeepConvNet(batch_norm=True, seed=1)
    again.load_params(tmp_path / "bn.npz")
    for (k, a), b in zip(net.state_dict().items(), again.state_dict().values(), strict=True):
        np.testing.assert_array_equal(a, b, err_msg=k)


@pytest.mark.parametrize("make", [lambda: DeepConvNet(seed=0), lambda: SimpleConvNet(seed=0)])
def test_integer_pixels_up_to_255_are_used_with_a_warning(make):
    """The book's load_mnist(normalize=False) gives uint8 0-255; the nets expect [0, 1]."""
    net, raw = make(), np.full((2, 1, 28, 28), 255, np.uint8)
    with pytest.warns(UserWarning, match=r"integers up to 255 \(uint8\).*normalize=True.*x / 255"):
        logits = net.predict(raw).numpy()
    np.testing.assert_array_equal(logits, net.predict(raw.astype(np.float32)).numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 0/1 integers and floats of any size: no warning
        net.predict(np.ones((2, 1, 28, 28), np.int64))
        net.predict(np.full((2, 1, 28, 28), 255.0, np.float32))
