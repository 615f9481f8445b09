"""Modules, layers and SimpleConvNet: registration, state dicts, init, accuracy, gradients."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import tinygrad_cnn.functional as F
from tinygrad_cnn import Tensor, nn
from tinygrad_cnn.nn import Module, SimpleConvNet
from tinygrad_cnn.testing import module_gradcheck

RNG = np.random.default_rng(0)


def tiny_net(**kw) -> SimpleConvNet:
    conv = {"filter_num": 2, "filter_size": 3, "pad": 1, "stride": 1}
    return SimpleConvNet((1, 7, 7), conv, hidden_size=5, output_size=3, **kw)


# ----------------------------------------------------------------------------- Module
def test_parameters_are_found_in_insertion_order_with_dotted_names():
    net = SimpleConvNet(seed=0)
    names = [name for name, _ in net.named_parameters()]
    assert names == [
        "conv1.weight", "conv1.bias", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias",
    ]  # fmt: skip
    assert [p.name for p in net.parameters()] == names
    assert all(p.requires_grad and p.dtype == np.float32 for p in net.parameters())


def test_nested_sequential_names():
    model = nn.Sequential(nn.Linear(4, 3, rng=0), nn.ReLU(), nn.Sequential(nn.Linear(3, 2, rng=1)))
    assert [n for n, _ in model.named_parameters()] == [
        "0.weight", "0.bias", "2.0.weight", "2.0.bias",
    ]  # fmt: skip
    assert model[2][0].weight.name == "2.0.weight"
    assert model(Tensor(np.ones((5, 4), np.float32))).shape == (5, 2)


def test_zero_grad_train_eval():
    net = tiny_net(seed=0)
    net.loss(RNG.random((2, 1, 7, 7)).astype(np.float32), np.array([0, 1])).backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    net.eval()
    assert not net.training and not net.conv1.training
    net.train()
    assert net.fc2.training


def test_state_dict_round_trip_and_strict_errors():
    a, b = tiny_net(seed=0), tiny_net(seed=1)
    b.load_state_dict(a.state_dict())
    for (_, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        np.testing.assert_array_equal(pa.data, pb.data)
    state = a.state_dict()
    state["fc1.weight"] = state["fc1.weight"][:, :2]
    with pytest.raises(ValueError, match=r"fc1\.weight"):
        b.load_state_dict(state)
    state = a.state_dict()
    del state["conv1.bias"]
    with pytest.raises(ValueError, match=r"conv1\.bias"):
        b.load_state_dict(state)
    state = a.state_dict()
    state["extra.weight"] = np.zeros(3)
    with pytest.raises(ValueError, match=r"extra\.weight"):
        b.load_state_dict(state)
    b.load_state_dict(state, strict=False)  # extras ignored when not strict


def test_state_dict_is_a_copy():
    net = tiny_net(seed=0)
    state = net.state_dict()
    state["conv1.weight"][:] = 7
    assert not (net.conv1.weight.data == 7).any()


@pytest.mark.parametrize(
    "spec, fan_in, expected",
    [(0.01, 25, 0.01), ("he", 50, np.sqrt(2 / 50)), ("relu", 50, np.sqrt(2 / 50)),
     ("xavier", 50, np.sqrt(1 / 50)), ("sigmoid", 50, np.sqrt(1 / 50))],
)  # fmt: skip
def test_initialisers_by_name(spec, fan_in, expected):
    layer = nn.Linear(fan_in, 4000, init=spec, rng=0)
    assert layer.weight.data.std() == pytest.approx(expected, rel=0.02)
    assert (layer.bias.data == 0).all()


def test_unknown_initialiser_is_rejected():
    with pytest.raises(ValueError, match="weight_init_std"):
        nn.Linear(3, 3, init="glorot-ish")


def test_dropout_is_inverted_and_inactive_in_eval():
    drop = nn.Dropout(0.25, rng=0)
    x = Tensor(np.ones((200, 500), np.float32))
    y = drop(x).data
    assert set(np.unique(y)) <= {0.0, np.float32(1 / 0.75)}
    assert y.mean() == pytest.approx(1.0, abs=0.02)
    drop.eval()
    assert drop(x) is x


def test_layers_match_functional():
    x = Tensor(RNG.random((2, 3, 8, 8)).astype(np.float32))
    conv = nn.Conv2d(3, 4, (3, 2), stride=2, padding=1, rng=0)
    np.testing.assert_allclose(
        conv(x).data, F.conv2d(x, conv.weight, conv.bias, 2, 1).data, rtol=1e-6
    )
    assert nn.AvgPool2d(2)(x).shape == (2, 3, 4, 4)
    assert nn.MaxPool2d(3, 1, 1)(x).shape == (2, 3, 8, 8)
    assert nn.Flatten()(x).shape == (2, 192)
    assert np.all((nn.Sigmoid()(x).data > 0) & (nn.ReLU()(x - 0.5).data >= 0))


# ----------------------------------------------------------------------------- SimpleConvNet
def test_simpleconvnet_shapes_and_odd_input_sizes():
    net = SimpleConvNet(seed=0)
    assert net.fc1.weight.shape == (4320, 100)
    assert net.predict(np.zeros((3, 1, 28, 28), np.float32)).shape == (3, 10)
    odd = SimpleConvNet(input_dim=(1, 29, 29), seed=0)  # conv 25x25 -> pool 12x12
    assert odd.fc1.weight.shape == (30 * 12 * 12, 100)
    assert odd.loss(np.zeros((2, 1, 29, 29), np.float32), np.array([1, 2])).shape == ()
    with pytest.raises(ValueError, match="too small"):
        SimpleConvNet(input_dim=(1, 4, 4))


@pytest.mark.parametrize("batch_size", [1, 7, 100, 1000])
def test_accuracy_counts_every_sample(batch_size):
    net = SimpleConvNet(seed=0)
    x = RNG.random((103, 1, 28, 28)).astype(np.float32)
    pred = net.predict(x).data.argmax(axis=1)
    t = pred.copy()
    t[:10] = (t[:10] + 1) % 10  # exactly 10 wrong
    assert net.accuracy(x, t, batch_size=batch_size) == pytest.approx(93 / 103)
    assert net.accuracy(x, np.eye(10)[t], batch_size=batch_size) == pytest.approx(93 / 103)


def test_gradient_returns_grads_by_parameter_name():
    net = SimpleConvNet(seed=0)
    x, t = RNG.random((4, 1, 28, 28)).astype(np.float32), np.array([1, 2, 3, 4])
    grads = net.gradient(x, t)
    assert list(grads) == [n for n, _ in net.named_parameters()]
    assert all(g.dtype == np.float32 and g.shape == p.shape for g, p in
               zip(grads.values(), net.parameters(), strict=True))  # fmt: skip


def test_whole_tiny_net_gradcheck_in_float64_wrt_every_parameter():
    net = tiny_net(seed=3, weight_init_std=0.5)
    x = np.random.default_rng(1).standard_normal((2, 1, 7, 7))
    t = np.array([0, 2])
    assert module_gradcheck(net, lambda: net.loss(x, t))
    assert net.conv1.weight.dtype == np.float32  # parameters restored afterwards


def test_save_and_load_params(tmp_path):
    a, b = SimpleConvNet(seed=0), SimpleConvNet(seed=1)
    a.save_params(tmp_path / "p.npz")
    b.load_params(tmp_path / "p.npz")
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        np.testing.assert_array_equal(pa.data, pb.data)


def test_load_params_from_the_books_pickle(tmp_path):
    a = SimpleConvNet(seed=0)
    keys = ["W1", "b1", "W2", "b2", "W3", "b3"]
    book = {k: p.data.astype(np.float64) for k, p in zip(keys, a.parameters(), strict=True)}
    with open(tmp_path / "params.pkl", "wb") as f:
        pickle.dump(book, f)
    b = SimpleConvNet(seed=1)
    b.load_params(tmp_path / "params.pkl")
    np.testing.assert_array_equal(a.fc1.weight.data, b.fc1.weight.data)
    assert b.fc1.weight.dtype == np.float32


def test_malicious_pickle_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "params.pkl", "wb") as f:
        pickle.dump({"W1": Evil()}, f)
    with pytest.raises(ValueError, match="refusing to unpickle"):
        SimpleConvNet().load_params(tmp_path / "params.pkl")


# ----------------------------------------------------------------------------- learning
def test_overfits_64_samples_to_full_train_accuracy():
    from tinygrad_cnn.data import load_mnist_mini
    from tinygrad_cnn.optim import Adam

    (x, t), _ = load_mnist_mini()
    x, t = x[:64], t[:64]
    net = SimpleConvNet(seed=0, weight_init_std="he")
    opt = Adam(net.parameters(), lr=0.003)
    for _ in range(60):
        opt.zero_grad()
        net.loss(x, t).backward()
        opt.step()
    assert net.accuracy(x, t) == 1.0


def test_loss_decreases_on_a_fixed_batch():
    from tinygrad_cnn.data import load_mnist_mini
    from tinygrad_cnn.optim import SGD

    (x, t), _ = load_mnist_mini()
    x, t = x[:32], t[:32]
    net = SimpleConvNet(seed=0, weight_init_std="he")
    opt = SGD(net.parameters(), lr=0.05)
    losses = []
    for _ in range(10):
        opt.zero_grad()
        loss = net.loss(x, t)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert all(b < a for a, b in zip(losses[:5], losses[1:6], strict=True))


def test_parameters_in_a_dict_filled_after_construction_are_found():
    from tinygrad_cnn.nn import Parameter
    from tinygrad_cnn.optim import SGD

    class BookStyle(Module):
        def __init__(self):
            super().__init__()
            self.params = {}  # filled afterwards, with nothing assigned after it
            self.params["W1"] = Parameter(np.ones((2, 3), np.float32))
            self.params["b1"] = Parameter(np.zeros(3, np.float32))

    net = BookStyle()
    assert [k for k, _ in net.named_parameters()] == ["params.W1", "params.b1"]
    net.params["W2"] = Parameter(np.ones((3, 1), np.float32))
    del net.params["W1"]
    assert [k for k, _ in net.named_parameters()] == ["params.b1", "params.W2"]
    SGD(net.parameters(), lr=0.1)

    class LateArray(Module):
        def __init__(self):
            super().__init__()
            self.params = {}
            self.params["W1"] = np.ones((2, 2))

    with pytest.raises(TypeError, match=r"LateArray: params\['W1'\] is a NumPy array"):
        LateArray().parameters()


def test_repr_shows_dropout_kind_and_pooling_geometry():
    assert repr(nn.Dropout(0.3)) == "Dropout(p=0.3)"
    assert repr(nn.Dropout(0.5, inverted=False)) == "Dropout(p=0.5, inverted=False)"
    assert repr(nn.MaxPool2d(2, 2)) == "MaxPool2d(kernel_size=2, stride=2, padding=0)"
    assert repr(nn.AvgPool2d(3, padding=1)) == "AvgPool2d(kernel_size=3, stride=None, padding=1)"


def test_linear_on_unflattened_images_says_to_flatten_first():
    x = np.zeros((8, 1, 28, 28), np.float32)
    with pytest.raises(ValueError, match=r"flatten x first.*x\.reshape\(8, -1\)"):
        nn.Linear(784, 10)(x)
    with pytest.raises(ValueError, match=r"got x \(8, 1, 28, 28\) and w \(780, 10\)") as e:
        nn.Linear(780, 10)(x)  # no flattening would fit: no hint
    assert "flatten" not in str(e.value)
