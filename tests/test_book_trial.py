"""What a reader's trial of the book checks found (issue 15): each test failed before its fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinygrad_cnn import Tensor, cli, cli_check, col2im, im2col
from tinygrad_cnn.audit import audit_graph
from tinygrad_cnn.book import as_function, check_layer, check_network

FOLDER = Path(__file__).resolve().parents[1] / "examples" / "book_layers"
layers = cli_check._import_file(FOLDER / "layers.py")
buggy = cli_check._import_file(FOLDER / "buggy.py")
rng = np.random.default_rng(15)
X = rng.random((6, 1, 10, 10))
T = rng.integers(0, 4, 6)


def small_net(**changes):
    """The book's SimpleConvNet on 10x10 images (3 filters, 8 hidden, 4 classes), fast."""
    net = layers.SimpleConvNet(
        input_dim=(1, 10, 10),
        conv_param={"filter_num": 3, "filter_size": 3},
        hidden_size=8,
        output_size=4,
        weight_init_std=0.3,
        seed=0,
    )
    for name, layer in changes.items():
        net.layers[name] = layer(net)
    return net


class AffineStale(layers.Affine):
    def forward(self, x):
        self.original_x_shape = x.shape
        x = x.reshape(x.shape[0], -1)
        if self.x is None:  # BUG: the input of the first call is kept for ever
            self.x = x
        return x @ self.W + self.b


class SwappedGradients(layers.SimpleConvNet):
    def gradient(self, x, t):
        grads = super().gradient(x, t)
        grads["W2"], grads["W3"] = grads["W3"], grads["W2"]  # BUG: keys swapped
        grads["b2"], grads["b3"] = grads["b3"], grads["b2"]
        return grads


def test_check_network_catches_a_stale_cache_that_only_check_layer_saw():
    alone = check_layer(AffineStale(rng.standard_normal((12, 5)), np.zeros(5)), X[:4, 0, :3, :4])
    assert alone.rows[1].diagnosis.code == "stale-cache"
    net = small_net(Affine1=lambda n: AffineStale(n.params["W2"], n.params["b2"]))
    report = check_network(net, X, T)
    assert not report.ok and report.first_wrong == "Affine1", str(report)
    dW = next(r for r in report.layers[3].rows if r.name == "dW")
    assert dW.diagnosis.code == "stale-cache"
    assert {r.name: r.ok for r in report.rows}["W2"] is False


def test_a_wrong_network_never_ends_with_all_right_and_swapped_keys_are_named():
    net = SwappedGradients(
        input_dim=(1, 10, 10), conv_param={"filter_num": 3, "filter_size": 3},
        hidden_size=8, output_size=4, seed=0,
    )  # fmt: skip
    report = check_network(net, X, T)
    text = str(report)
    assert not report.ok and report.first_wrong is None
    assert "all right" not in text.splitlines()[-1]
    assert "network.gradient is wrong for W2, b2, W3, b3" in text.splitlines()[-1]
    assert "W2 has W3's shape (8, 4)" in text and "keys swapped in gradient()" in text


def test_a_layer_holding_a_copy_of_a_param_is_not_used_with_full_error():
    report = check_network(buggy.copied_params_net(), X, T)
    row = {r.name: r for r in report.rows}["W2"]
    assert row.diagnosis.code == "not-used" and row.error == 1.0
    assert "network.params['W2']" in row.diagnosis.message
    assert "network.gradient is wrong for W2" in str(report).splitlines()[-1]


class AffineUsesCopy(layers.Affine):
    def __init__(self, W, b):
        super().__init__(W, b)
        self.W_used = W.copy()  # BUG: forward computes with a copy of W

    def forward(self, x):
        self.original_x_shape = x.shape
        self.x = x.reshape(x.shape[0], -1)
        return self.x @ self.W_used + self.b


def test_check_layer_says_not_used_for_a_layer_computing_with_a_copy():
    report = check_layer(AffineUsesCopy(rng.standard_normal((6, 3)), np.zeros(3)), X[:4, 0, :2, :3])
    dW = report.rows[1]
    assert dW.diagnosis.code == "not-used" and dW.error == 1.0, str(report)


def test_audit_of_book_dropout_and_relu_keeps_masks_and_the_layers_state():
    x = Tensor(rng.standard_normal((8, 10)), requires_grad=True)
    drop, relu = layers.Dropout(0.5), layers.Relu()
    h = as_function(relu)(as_function(drop)(x))
    mask, dmask = relu.mask, drop.mask
    loss = (h * Tensor(rng.standard_normal((8, 10)))).sum()
    report = audit_graph(loss)
    assert report.ok, str(report)  # a re-run drew a new dropout mask before
    assert relu.mask is mask and drop.mask is dmask  # the audit's re-runs left them alone


def test_render_after_backward_says_why_it_cannot(tmp_path):
    loss = as_function(layers.Relu())(Tensor(rng.standard_normal((2, 3)), requires_grad=True))
    report = audit_graph(loss.sum())
    loss.sum().backward()
    try:
        report.render(tmp_path / "a.dot")
    except RuntimeError as e:
        assert "freed by backward()" in str(e) and "retain_graph=True" in str(e)


def test_cli_names_the_users_file_and_line_where_the_layer_crashed(tmp_path, capsys):
    src = tmp_path / "mine.py"
    src.write_text(
        "import numpy as np\n"
        "class Broken:\n"
        "    def forward(self, x):\n"
        "        self.x = x\n"
        "        return x * 2\n"
        "    def backward(self, dout):\n"
        "        return dout.reshape(3, 7)\n"
    )
    assert cli.main(["check", f"{src}:Broken", "--input-shape", "2,5"]) == 1
    out = capsys.readouterr().out
    assert f"{src}:7" in out and "backward raised ValueError" in out


def test_cli_checks_an_affine_with_a_4d_input_too(capsys):
    assert cli.main(["check", f"{FOLDER / 'buggy.py'}:no_reshape_affine"]) == 1
    out = capsys.readouterr().out
    assert "input (2, 3, 2, 2)" in out and "WRONG: wrong-shape" in out
    w = '{"W": {"randn": [13, 5]}, "b": {"randn": [5]}}'
    assert cli.main(["check", f"{FOLDER / 'layers.py'}:Affine", "--args", w]) == 0
    note = capsys.readouterr().out.splitlines()[-1]
    assert "4-D input path" in note and "not checked" in note and "--input-shape" in note


def test_cli_guesses_a_networks_input_and_does_not_blame_the_layer_for_a_bad_guess(
    tmp_path, capsys
):
    assert cli.main(["check", f"{FOLDER / 'buggy.py'}:copied_params_net"]) == 1
    assert "input (10, 1, 10, 10)" in capsys.readouterr().out  # not the book's 28x28
    src = tmp_path / "five.py"
    src.write_text(
        "class Five:\n"
        "    def forward(self, x):\n"
        "        return x.reshape(len(x), 5)\n"
        "    def backward(self, dout):\n"
        "        return dout\n"
    )
    assert cli.main(["check", f"{src}:Five"]) == 2
    err = capsys.readouterr().err
    assert "guessed" in err and "2,3,6,6" in err and "--input-shape" in err


def test_the_same_bug_gets_the_same_diagnosis_in_a_layer_and_in_a_network():
    def conv(cls):
        return lambda n: cls(n.params["W1"], n.params["b1"])

    report = check_network(small_net(Conv1=conv(buggy.ConvolutionOverwrite)), X, T)
    assert report.layers[0].rows[0].diagnosis.code == "window-overlap", str(report)

    class ConvBiasAxis(layers.Convolution):
        def backward(self, dout):
            dx = super().backward(dout)
            self.db = dout.transpose(0, 2, 3, 1).reshape(-1, self.W.shape[0]).sum(axis=1)  # BUG
            return dx

    for report in (
        check_layer(ConvBiasAxis(rng.standard_normal((3, 2, 3, 3)), np.zeros(3)),
                    rng.standard_normal((2, 2, 6, 6))),
        check_network(small_net(Conv1=conv(ConvBiasAxis)), X, T).layers[0],
    ):  # fmt: skip
        assert report.rows[2].diagnosis.code == "bias-axis", str(report)

    class PoolArgmin(layers.Pooling):
        def forward(self, x):
            out = super().forward(x)
            cols = im2col(x, self.pool_h, self.pool_w, stride=self.stride)
            self.arg_max = np.argmin(cols.reshape(-1, self.pool_h * self.pool_w), axis=1)  # BUG
            return out

    report = check_layer(PoolArgmin(2, 2, 2), rng.standard_normal((2, 3, 4, 4)))
    message = report.rows[0].diagnosis.message
    assert "x > 0" not in message and "argmin" in message, message


class ReluScale:
    """y = x * max(W, 0): at W = 0 every element of W sits on a kink."""

    def __init__(self, W):
        self.W = W

    def forward(self, x):
        self.x = x
        return x * np.maximum(self.W, 0)

    def backward(self, dout):
        self.dW = (dout * self.x).sum(axis=0) * (self.W > 0)
        return dout * np.maximum(self.W, 0)


def test_a_parameter_checked_only_on_kinks_is_reported_not_checked():
    report = check_layer(ReluScale(np.zeros(4)), rng.standard_normal((3, 4)))
    dW = report.rows[1]
    assert report.ok and not dW.verified
    assert "not checked (every sampled element on a kink)" in str(report)
    assert "dW not checked" in str(report).splitlines()[-1]
    assert check_layer(ReluScale(np.ones(4)), rng.standard_normal((3, 4))).rows[1].verified


def test_im2col_with_stride_by_keyword_is_the_books_and_messages_use_own_arguments():
    x = rng.standard_normal((2, 3, 9, 9))
    np.testing.assert_array_equal(im2col(x, 5, 5, stride=1), layers.im2col(x, 5, 5, 1))
    with pytest.raises(TypeError, match=r"col2im\(col, input_shape, filter_h, filter_w"):
        col2im(np.ones((2, 2)), x.shape, 5, 5)


def test_plurals_in_the_messages():
    class SigmoidFirst(layers.Sigmoid):
        def backward(self, dout):
            return dout * (1.0 - self.out[0]) * self.out[0]  # BUG: sample 0 for all

    message = check_layer(SigmoidFirst(), rng.standard_normal((2, 5))).rows[0].diagnosis.message
    assert "wrong for the other sample" in message, message
    report = check_layer(ReluScale(np.array([0.0, 1.0, 2.0])), rng.standard_normal((2, 3)))
    assert "ReluScale.dW: 1 element on a kink held fixed" in str(report), str(report)
