"""No trap between the book and us: im2col, params files under any name, params dicts, and
the traps a trial of the book's chapters 6 and 8 found (stored losses, NumPy on Tensors,
labels, gradient dicts, Dropout, .pkl files, ``params``, BatchNorm arguments, image shapes)."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest

from tinygrad_cnn import Tensor, cli, cli_check, col2im, im2col, nn, no_grad
from tinygrad_cnn.models import DeepConvNet, SimpleConvNet
from tinygrad_cnn.nn import Dropout, Linear, Module, Parameter
from tinygrad_cnn.optim import Adam

book = cli_check._import_file(
    Path(__file__).resolve().parents[1] / "examples/book_layers/layers.py"
)
X = np.random.default_rng(0).standard_normal((2, 3, 9, 9))


def test_im2col_and_col2im_accept_the_books_signature():
    np.testing.assert_array_equal(im2col(X, 3, 2, 2, 1), book.im2col(X, 3, 2, 2, 1))
    np.testing.assert_array_equal(im2col(X, filter_h=3, filter_w=2), book.im2col(X, 3, 2))
    c = np.random.default_rng(1).standard_normal(book.im2col(X, 3, 2, 2, 1).shape)
    np.testing.assert_allclose(col2im(c, X.shape, 3, 2, 2, 1), book.col2im(c, X.shape, 3, 2, 2, 1))


@pytest.mark.parametrize("call", [lambda: im2col(X, 5, 5), lambda: im2col(X, 3, 3, 1),
                                  lambda: col2im(np.ones((2, 2)), X.shape, 5, 5)])  # fmt: skip
def test_an_ambiguous_im2col_call_is_refused_not_silently_different(call):
    with pytest.raises(TypeError, match="ambiguous.*filter_h, filter_w, stride=1, pad=0"):
        call()


def test_our_im2col_forms_still_work():
    assert im2col(X, 3).shape == (2 * 7 * 7, 27)
    assert im2col(X, (3, 3), 2, 1).shape == (2 * 5 * 5, 27)
    assert im2col(X, 3, stride=2, padding=1).shape == (2 * 5 * 5, 27)


@pytest.mark.parametrize("name", ["params.pkl", "params.npz", "weights", "model.bin"])
def test_save_params_load_params_round_trip_under_any_name(tmp_path, name):
    net, other = SimpleConvNet(seed=0), SimpleConvNet(seed=1)
    net.save_params(tmp_path / name)
    other.load_params(tmp_path / name)
    for (k, a), (_, b) in zip(net.named_parameters(), other.named_parameters(), strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=k)


def test_the_books_pickle_loads_under_an_npz_name(tmp_path):
    net = SimpleConvNet(seed=0)
    keys = ["W1", "b1", "W2", "b2", "W3", "b3"]
    params = {k: p.numpy() + 1 for k, (_, p) in zip(keys, net.named_parameters(), strict=True)}
    (tmp_path / "params.npz").write_bytes(pickle.dumps(params))
    net.load_params(tmp_path / "params.npz")
    np.testing.assert_array_equal(net.conv1.weight.numpy(), params["W1"])


def test_parameters_in_a_params_dict_are_found_and_train():
    class BookStyle(Module):
        def __init__(self):
            super().__init__()
            self.params = {}  # filled afterwards, as the book does
            self.params["W1"] = Parameter(np.ones((4, 2), np.float32))
            self.layers = [Linear(2, 3, rng=0)]
            self.params["b1"] = Parameter(np.zeros(2, np.float32))
            self.output_size = 3

    names = [n for n, _ in BookStyle().named_parameters()]
    assert names == ["params.W1", "params.b1", "layers.0.weight", "layers.0.bias"]
    assert len(Adam(BookStyle().parameters()).params) == 4


def test_a_bare_array_in_a_params_dict_is_named_at_construction():
    class Arrays(Module):
        def __init__(self):
            super().__init__()
            self.params = {"W1": 0.01 * np.ones((4, 2))}

    with pytest.raises(TypeError, match=r"Arrays: params\['W1'\] is a NumPy array.*Parameter"):
        Arrays()


def test_our_trained_params_go_into_the_books_network(tmp_path):
    """The reverse bridge: our SimpleConvNet's weights in the book's names and layouts, as a
    dict for the book's network and as the book's own pickle file."""
    net = SimpleConvNet(seed=3, weight_init_std="he", dtype=np.float64)
    theirs = book.SimpleConvNet(seed=0)
    for key, value in net.book_params().items():
        theirs.params[key][...] = value  # the book's layers hold these very arrays
    x = np.random.default_rng(1).random((4, 1, 28, 28))
    np.testing.assert_allclose(theirs.predict(x), net.predict(x).numpy(), rtol=1e-10, atol=1e-12)
    net.save_params(tmp_path / "params.pkl", book=True)
    with open(tmp_path / "params.pkl", "rb") as f:
        assert sorted(pickle.load(f)) == ["W1", "W2", "W3", "b1", "b2", "b3"]
    again = SimpleConvNet(seed=9, dtype=np.float64)
    again.load_params(tmp_path / "params.pkl")  # through our array-only unpickler
    for a, b in zip(again.parameters(), net.parameters(), strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


# ---------------------------------------------------------------- traps of the book's ch. 6/8
def small_net(**kwargs) -> SimpleConvNet:
    conv = {"filter_num": 3, "filter_size": 3}
    return SimpleConvNet((1, 8, 8), conv, 10, 4, "he", **{"seed": 0, **kwargs})


def batch(n: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 1, 8, 8) whose label (0..3) is the brightest quadrant: learnable."""
    rng = np.random.default_rng(seed)
    t = rng.integers(0, 4, n)
    x = rng.random((n, 1, 8, 8)).astype(np.float32) * 0.5
    for i, k in enumerate(t):
        x[i, 0, 4 * (k // 2) : 4 * (k // 2) + 4, 4 * (k % 2) : 4 * (k % 2) + 4] += 1
    return x, t


def test_stored_loss_tensors_that_hold_their_graphs_warn_once_per_network():
    net, (x, t) = small_net(), batch()
    kept = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(20):  # the book's Trainer: gradient, then loss, kept in a list
            net.gradient(x, t)
            kept.append(net.loss(x, t))
    assert len(caught) == 1 and caught[0].category is UserWarning
    message = str(caught[0].message)
    assert "SimpleConvNet.loss: 9 loss Tensors" in message and "float(loss)" in message
    assert "loss.item()" in message and "graph" in message
    assert "float(loss)" in SimpleConvNet.loss.__doc__ and "float(loss)" in DeepConvNet.loss.__doc__


@pytest.mark.parametrize(
    "keep",
    [lambda loss: float(loss), lambda loss: loss.item(), lambda loss: (loss.backward(), loss)[1]],
    ids=["float", "item", "backpropagated"],
)
def test_numbers_and_backpropagated_losses_do_not_warn(keep):
    net, (x, t) = small_net(), batch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kept = [keep(net.loss(x, t)) for _ in range(20)]
        with no_grad():  # no graph at all
            kept += [net.loss(x, t) for _ in range(20)]
    assert len(kept) == 40


def test_numpy_functions_take_tensors_and_never_end_in_a_system_error():
    a = np.random.default_rng(0).random((3, 4)).astype(np.float32)
    y = Tensor(a)
    assert isinstance(np.argmax(y, axis=1), np.ndarray)  # the book's accuracy line
    np.testing.assert_array_equal(np.argmax(y, axis=1), a.argmax(axis=1))
    assert np.asarray(y).dtype == np.float32 and np.shares_memory(np.asarray(y), y.numpy())
    assert not np.shares_memory(np.array(y, copy=True), y.numpy())
    assert np.asarray(y, dtype=np.float64).dtype == np.float64
    with pytest.raises(ValueError, match="copy=False"):
        np.array(y, dtype=np.float64, copy=False)
    for f in (np.sort, np.argsort, np.cumsum, np.unique, np.nonzero, np.median, np.round):
        np.testing.assert_array_equal(f(y), f(a), err_msg=str(f))
    np.testing.assert_array_equal(np.max(y, axis=1).numpy(), a.max(axis=1))  # as y.max(1)
    np.testing.assert_allclose(np.mean(y).item(), a.mean(), rtol=1e-6)
    with pytest.raises(TypeError, match="no out argument.*t.numpy"):
        np.max(y, axis=1, out=np.zeros(3, np.float32))
    objects = np.array([Tensor(1.0), Tensor(3.0), Tensor(2.0)], dtype=object)
    assert objects.argmax() == 1  # an object array's comparisons need bool(Tensor)
    assert bool(Tensor(2.0)) and not Tensor(0.0)
    with pytest.raises(ValueError, match=r"truth value of a Tensor of shape \(3, 4\)"):
        bool(y)


def test_ufuncs_still_defer_to_tensors_or_refuse_them():
    y = Tensor(np.ones(3, np.float32), requires_grad=True)
    assert isinstance(np.ones(3, np.float32) + y, Tensor)  # the reflected operator
    assert isinstance(np.ones(3, np.float32) * y, Tensor)
    with pytest.raises(TypeError, match="does not support ufuncs"):
        np.exp(y)
    z = Tensor(np.ones(2, np.float32))
    z += 1.0  # in-place operators still update a tensor outside a graph
    np.testing.assert_array_equal(z.numpy(), [2, 2])


@pytest.mark.parametrize("method", ["accuracy", "loss"])
@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (np.zeros((12, 1), np.int64), r"labels must be \(N,\) integers or one-hot \(N, 4\) for "
                                      r"12 images and 4 classes, got shape \(12, 1\); flatten.*"
                                      r"t.ravel\(\)"),
        (np.eye(6)[np.arange(12) % 6], r"labels must be .* one-hot \(N, 4\) .* 4 classes, "
                                       r"got shape \(12, 6\)"),
        (np.full(12, 4), r"labels must lie in \[0, 4\) for 4 classes, got values in \[4, 4\]"),
        (np.zeros(12, np.float32), "1-D labels must be integers, got dtype float32"),
        (np.zeros(5, np.int64), r"12 images but labels of shape \(5,\)"),
    ],
)  # fmt: skip
def test_accuracy_checks_labels_as_loss_does(method, labels, message):
    net, (x, _) = small_net(), batch()
    with pytest.raises(ValueError, match=rf"SimpleConvNet\.{method}: {message}"):
        getattr(net, method)(x, labels)


def test_gradient_returns_new_arrays_and_sets_every_grad():
    net, (x, t) = small_net(), batch()
    first = net.gradient(x, t)
    assert list(first) == [name for name, _ in net.named_parameters()] == list(net.params)
    for name, p in net.named_parameters():
        np.testing.assert_array_equal(first[name], p.grad)
        assert not np.shares_memory(first[name], p.grad)
    kept = {k: v.copy() for k, v in first.items()}
    net.gradient(x[:4], t[:4])  # another batch: the dict the user holds stays as it was
    assert all(np.array_equal(first[k], kept[k]) for k in kept)
    assert "new arrays" in net.gradient.__doc__ and "zeroes" in net.gradient.__doc__.lower()


def test_dropout_in_eval_mode_returns_a_tensor():
    drop = Dropout(0.5, rng=0).eval()
    x = np.ones((2, 3), np.float32)
    y = drop(x)
    assert isinstance(y, Tensor) and np.shares_memory(y.numpy(), x)
    t = Tensor(x)
    assert drop(t) is t


def test_a_pkl_name_writes_the_books_pickle(tmp_path):
    net = small_net()
    net.save_params(tmp_path / "deep_convnet_params.pkl")  # the book's call
    with open(tmp_path / "deep_convnet_params.pkl", "rb") as f:
        params = pickle.load(f)  # the book's load_params
    assert list(params) == list(SimpleConvNet.BOOK_KEYS)
    np.testing.assert_array_equal(params["W1"], net.conv1.weight.numpy())
    net.save_params(tmp_path / "ours.pkl", book=False)  # asked for: our .npz
    assert (tmp_path / "ours.pkl").read_bytes()[:2] == b"PK"
    with pytest.raises(ValueError, match=r"\.pkl name writes the book's pickle.*net\.npz"):
        DeepConvNet(batch_norm=True).save_params(tmp_path / "net.pkl")
    assert not (tmp_path / "net.pkl").exists()


def book_sgd(lr: float):
    class SGD:  # the book's, as printed
        def __init__(self, lr=0.01):
            self.lr = lr

        def update(self, params, grads):
            for key in params.keys():
                params[key] -= self.lr * grads[key]

    return SGD(lr)


def book_adam(lr: float):
    class Adam:  # the book's, as printed
        def __init__(self, lr=0.001, beta1=0.9, beta2=0.999):
            self.lr, self.beta1, self.beta2 = lr, beta1, beta2
            self.iter, self.m, self.v = 0, None, None

        def update(self, params, grads):
            if self.m is None:
                self.m = {key: np.zeros_like(val) for key, val in params.items()}
                self.v = {key: np.zeros_like(val) for key, val in params.items()}
            self.iter += 1
            lr_t = self.lr * np.sqrt(1.0 - self.beta2**self.iter) / (1.0 - self.beta1**self.iter)
            for key in params.keys():
                self.m[key] += (1 - self.beta1) * (grads[key] - self.m[key])
                self.v[key] += (1 - self.beta2) * (grads[key] ** 2 - self.v[key])
                params[key] -= lr_t * self.m[key] / (np.sqrt(self.v[key]) + 1e-7)

    return Adam(lr)


@pytest.mark.parametrize("optimizer", [book_sgd(0.1), book_adam(0.01)], ids=["SGD", "Adam"])
def test_the_books_optimizers_train_through_params(optimizer):
    net, (x, t) = small_net(), batch(24)
    before = net.conv1.weight.numpy().copy()
    losses = []
    for _ in range(15):
        grads = net.gradient(x, t)
        optimizer.update(net.params, grads)
        losses.append(float(net.loss(x, t)))
    assert not np.array_equal(net.conv1.weight.numpy(), before)  # updated in place
    assert losses[-1] < 0.7 * losses[0], losses
    with pytest.raises(AttributeError):
        net.params = {}


@pytest.mark.parametrize("cls", [nn.BatchNorm1d, nn.BatchNorm2d])
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"momentum": 1.5}, "momentum must be a number in \\[0, 1\\].*1.5"),
     ({"momentum": -0.1}, "momentum must be .*-0.1"), ({"momentum": "0.1"}, "momentum"),
     ({"eps": 0.0}, "eps must be a positive number, got 0.0"), ({"eps": -1e-5}, "eps")],
)  # fmt: skip
def test_batch_norm_refuses_a_momentum_outside_0_1_and_eps_not_positive(cls, kwargs, message):
    with pytest.raises(ValueError, match=f"{cls.__name__}: {message}"):
        cls(5, **kwargs)
    cls(5, momentum=0.0), cls(5, momentum=1.0), cls(5, eps=1e-7)  # the edges are fine


@pytest.mark.parametrize(
    ("shape", "hint"),
    [((2, 784), r"x\.reshape\(-1, 1, 28, 28\) or .*load_mnist\(flatten=False\)"),
     ((1, 28, 28), r"x\[None\]"), ((28, 28), r"x\[None, None\]"), ((2, 28, 28), r"x\[:, None\]"),
     ((2, 28, 28, 1), r"x\.transpose\(0, 3, 1, 2\)")],
)  # fmt: skip
@pytest.mark.parametrize("cls", [SimpleConvNet, DeepConvNet])
def test_wrong_image_shapes_say_how_to_fix_them(cls, shape, hint):
    with pytest.raises(
        ValueError, match=rf"{cls.__name__}: images must be \(N, 1, 28, 28\).*{hint}"
    ):
        cls(seed=0).predict(np.zeros(shape, np.float32))
    with pytest.raises(ValueError, match=r"DeepConvNet: images .* got \(2, 1, 32, 32\)$"):
        DeepConvNet(seed=0).predict(np.zeros((2, 1, 32, 32), np.float32))  # no hint to give


def test_book_pickle_errors_speak_the_books_names(tmp_path):
    net = small_net()
    params = net.book_params()
    del params["b3"]
    (tmp_path / "missing.pkl").write_bytes(pickle.dumps(params))
    with pytest.raises(
        ValueError, match=r"not the book's SimpleConvNet parameters \(missing: b3\)$"
    ):
        net.load_params(tmp_path / "missing.pkl")
    params = {**net.book_params(), "W2": np.zeros((5, 10), np.float32), "W9": np.zeros(1)}
    (tmp_path / "extra.pkl").write_bytes(pickle.dumps(params))
    with pytest.raises(ValueError, match=r"\(unexpected: W9\)$"):
        net.load_params(tmp_path / "extra.pkl")
    del params["W9"]
    (tmp_path / "shape.pkl").write_bytes(pickle.dumps(params))
    with pytest.raises(ValueError, match=r"W2 has shape \(5, 10\) in the file.*W2 has shape \(27,"):
        net.load_params(tmp_path / "shape.pkl")
    (tmp_path / "garbage.pkl").write_bytes(b"hello")
    with pytest.raises(ValueError, match="garbage.pkl is not a pickle of the book's parameters"):
        net.load_params(tmp_path / "garbage.pkl")


# ----------------------------------------------------------------------------- third trial
def test_params_dict_takes_in_place_updates_and_refuses_replacing_arrays():
    from tinygrad_cnn.models import SimpleConvNet

    net = SimpleConvNet(seed=0)
    params = net.params
    before = net.fc2.bias.numpy().copy()
    params["fc2.bias"] -= 1.0  # the book's optimizers: in place, stored back
    np.testing.assert_array_equal(net.fc2.bias.numpy(), before - 1.0)
    with pytest.raises(TypeError, match="in place"):
        params["fc2.bias"] = params["fc2.bias"] - 1.0
    with pytest.raises(KeyError, match="conv1.weight"):
        params["W1"]


def test_the_stored_loss_warning_points_at_the_users_line():
    import warnings

    from tinygrad_cnn.models import SimpleConvNet

    net = SimpleConvNet(seed=0)
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    kept = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(10):
            net.gradient(x, np.arange(4))
            kept.append(net.loss(x, np.arange(4)))
    assert len(caught) == 1 and caught[0].filename == __file__


def test_numpy_views_of_a_tensor_are_read_only_and_comparisons_name_the_operator():
    from tinygrad_cnn import Tensor

    p = Tensor(np.ones(3, np.float32), requires_grad=True)
    with pytest.raises(ValueError, match="read-only"):
        np.asarray(p)[0] = 5.0
    assert np.array(p).flags.writeable  # np.array copies
    assert bool((p == p).all()) and not bool((p != p).any())
    with pytest.raises(ValueError, match=r"Tensor ==: shapes \(3,\) and \(2,\)"):
        p == Tensor(np.ones(2))  # noqa: B015
    with pytest.raises(ValueError, match="some_list"):
        bool(p == p)


def test_a_checkpoint_or_the_other_variant_given_as_params_says_what_it_is(tmp_path):
    from tinygrad_cnn.models import DeepConvNet

    DeepConvNet(batch_norm=True, seed=0).save_params(tmp_path / "bn.npz")
    with pytest.raises(ValueError, match=r"batch_norm=True"):
        DeepConvNet(seed=0).load_params(tmp_path / "bn.npz")
    DeepConvNet(seed=0).save_params(tmp_path / "plain.npz")
    with pytest.raises(ValueError, match=r"without batch normalisation"):
        DeepConvNet(batch_norm=True, seed=0).load_params(tmp_path / "plain.npz")


def test_a_checkpoint_given_as_params_is_named_as_one(tmp_path):
    from tinygrad_cnn.train import Trainer

    x = np.random.default_rng(0).random((20, 1, 28, 28), dtype=np.float32)
    t = np.arange(20) % 10
    net = SimpleConvNet(seed=0)
    Trainer(net, x, t, x, t, epochs=1, mini_batch_size=10, verbose=False,
            checkpoint=tmp_path / "checkpoint.npz").train()  # fmt: skip
    with pytest.raises(ValueError, match="training checkpoint") as e:
        SimpleConvNet(seed=0).load_params(tmp_path / "checkpoint.npz")
    assert "optim/" not in str(e.value)
    code = cli.main(["evaluate", "--params", str(tmp_path / "checkpoint.npz")])
    assert code != 0
