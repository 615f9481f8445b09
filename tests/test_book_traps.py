"""No trap between the book and us: im2col, params files under any name, params dicts."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from tinygrad_cnn import cli, col2im, im2col
from tinygrad_cnn.models import SimpleConvNet
from tinygrad_cnn.nn import Linear, Module, Parameter
from tinygrad_cnn.optim import Adam

book = cli._import_file(Path(__file__).resolve().parents[1] / "examples/book_layers/layers.py")
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
