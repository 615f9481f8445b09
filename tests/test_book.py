"""The book bridge: check_layer / check_network / as_function / `tinygrad-cnn check`."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tinygrad_cnn import Tensor, cli, cli_check
from tinygrad_cnn.audit import audit_graph
from tinygrad_cnn.book import CATALOGUE, LayerError, as_function, check_layer, check_network
from tinygrad_cnn.data import load_mnist_mini

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "examples" / "book_layers"
layers = cli_check._import_file(FOLDER / "layers.py")
buggy = cli_check._import_file(FOLDER / "buggy.py")
rng = np.random.default_rng(0)


def _correct_layers():
    r = np.random.default_rng(3)
    return [
        (layers.Relu(), (2, 3, 4, 4)),
        (layers.Sigmoid(), (3, 5)),
        (layers.Affine(r.standard_normal((12, 5)), r.standard_normal(5)), (2, 3, 2, 2)),
        (
            layers.Convolution(r.standard_normal((3, 2, 3, 3)), r.standard_normal(3), 2, 1),
            (2, 2, 7, 7),
        ),
        (layers.Pooling(3, 3, 2), (2, 3, 7, 7)),
        (layers.Dropout(0.3), (4, 10)),
        (layers.BatchNormalization(r.standard_normal(12), r.standard_normal(12)), (4, 3, 2, 2)),
    ]


@pytest.mark.parametrize("index", range(7))
def test_correct_book_layers_check_clean(index):
    layer, shape = _correct_layers()[index]
    report = check_layer(layer, rng.standard_normal(shape))
    assert report.ok, str(report)
    assert {r.name for r in report.rows} >= {"dx"}
    assert all(r.checked == np.prod(r.shape) for r in report.rows)  # small: every element


def test_correct_loss_layer_checks_clean_with_labels_and_one_hot():
    x = rng.standard_normal((4, 10))
    labels = np.array([1, 5, 0, 9])
    assert check_layer(layers.SoftmaxWithLoss(), x, labels).ok
    assert check_layer(layers.SoftmaxWithLoss(), x, np.eye(10)[labels]).ok
    with pytest.raises(ValueError, match="pass the labels t"):
        check_layer(layers.SoftmaxWithLoss(), x)


@pytest.mark.parametrize("name", sorted(buggy.BUGS))
def test_cli_check_diagnoses_every_planted_bug(name, capsys):
    code, shape = buggy.BUGS[name]
    status = cli.main(["check", f"{FOLDER / 'buggy.py'}:{name}", "--input-shape", shape])
    out = capsys.readouterr().out
    assert status == 1, out
    assert f"WRONG: {code}" in out, out
    assert out.count("WRONG:") == 1, out  # only the planted gradient


def test_every_catalogue_entry_has_a_planted_bug():
    assert {code for code, _ in buggy.BUGS.values()} == set(CATALOGUE)


def test_cli_check_correct_layers_exit_0_and_usage_errors_exit_2(capsys):
    assert cli.main(["check", f"{FOLDER / 'layers.py'}:Relu"]) == 0
    args = '{"pool_h": 2, "pool_w": 2, "stride": 2}'
    assert cli.main(["check", f"{FOLDER / 'layers.py'}:Pooling", "--args", args]) == 0
    w = '{"W": {"randn": [12, 5]}, "b": {"randn": [5]}}'
    assert cli.main(["check", f"{FOLDER / 'layers.py'}:Affine", "--args", w]) == 0
    for argv in (
        [f"{FOLDER / 'layers.py'}:Nope"],
        [f"{FOLDER / 'nothing.py'}:Relu"],
        [f"{FOLDER / 'layers.py'}"],
        [f"{FOLDER / 'layers.py'}:Pooling", "--args", "{not json"],
        [f"{FOLDER / 'layers.py'}:Pooling", "--args", '{"size": 2}'],
        [f"{FOLDER / 'layers.py'}:softmax"],
    ):
        assert cli.main(["check", *argv]) == 2, argv
    assert "has no 'Nope'" in capsys.readouterr().err


def test_cli_check_runs_as_a_command_with_relative_imports(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [sys.executable, "-m", "tinygrad_cnn", "check", f"{FOLDER / 'buggy.py'}:ReluInverted"]
    result = subprocess.run([*cmd, "--out", str(tmp_path / "r.dot")], capture_output=True,
                            text=True, cwd=tmp_path, env=env, timeout=120)  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "WRONG: mask-inverted" in result.stdout
    dot = (tmp_path / "r.dot").read_text()
    assert dot.count("#ff6666") == 2  # the op and the tensor whose gradient is wrong


def test_check_layer_leaves_the_users_objects_and_random_state_alone():
    W, b = rng.standard_normal((12, 5)).astype(np.float32), np.zeros(5, np.float32)
    layer = buggy.AffineTransposed(W, b)
    before = {k: copy.deepcopy(v) for k, v in vars(layer).items()}
    np.random.seed(5)  # noqa: NPY002 (the global state the check must restore)
    state = np.random.get_state()[1].copy()  # noqa: NPY002
    report = check_layer(layer, rng.standard_normal((4, 12)))
    assert not report.ok
    assert layer.W is W and layer.b is b and W.dtype == np.float32
    for k, v in vars(layer).items():
        assert type(v) is type(before[k]) and (v is None or np.array_equal(v, before[k])), k
    assert np.array_equal(np.random.get_state()[1], state)  # noqa: NPY002


class _Scale:
    """Scales by 2 in training and 3 in evaluation; backward knows only training."""

    def forward(self, x, train_flg=True):
        return x * (2.0 if train_flg else 3.0)

    def backward(self, dout):
        return dout * 2.0


def test_dropout_mask_held_and_train_flg_honoured():
    x = rng.standard_normal((4, 10))
    assert check_layer(layers.Dropout(0.5), x).ok  # a new mask per forward would fail
    assert check_layer(_Scale(), x).ok
    report = check_layer(_Scale(), x, train_flg=False)
    assert report.rows[0].diagnosis.code == "constant-factor"
    with pytest.raises(LayerError, match=r"check_layer\(Dropout\).*NoneType"):
        check_layer(layers.Dropout(0.5), x, train_flg=False)  # no mask outside training


def test_relu_on_exact_kinks_is_not_a_false_alarm():
    x = rng.standard_normal((2, 3, 4, 4))
    x[:, :, :2] = 0.0  # half the inputs exactly on ReLU's kink
    report = check_layer(layers.Relu(), x)
    assert report.ok and report.rows[0].checked < x.size  # kinks held fixed, not reported


def test_check_network_is_fast_clean_and_names_the_first_wrong_layer():
    (x, t), _ = load_mnist_mini()
    start = time.perf_counter()
    report = check_network(layers.SimpleConvNet(seed=0), x[:10], t[:10])
    assert time.perf_counter() - start < 10
    assert report.ok, str(report)
    bad = check_network(buggy.buggy_simpleconvnet(), x[:10], t[:10])
    assert not bad.ok and bad.first_wrong == "Pool1"
    assert "first wrong layer: Pool1" in str(bad)


def test_as_function_gradients_match_the_layer_and_reach_its_params():
    W, b = rng.standard_normal((12, 5)), rng.standard_normal(5)
    layer = layers.Affine(W, b)
    fn = as_function(layer)
    x = Tensor(rng.standard_normal((4, 12)), requires_grad=True)
    u = rng.standard_normal((4, 5))
    fn(x).backward(u)
    layer.forward(x.numpy())
    dx = layer.backward(u.copy())
    np.testing.assert_allclose(x.grad, dx)
    np.testing.assert_allclose(fn.params[0].grad, layer.dW)
    assert fn.params[0].numpy() is W  # shares memory: an optimizer step updates the layer


def test_correct_book_layers_on_100_mnist_images_audit_clean():
    (x, t), _ = load_mnist_mini()
    net = layers.SimpleConvNet(seed=0)
    h = Tensor(x[:100].astype(np.float64), requires_grad=False)
    for layer in net.layers.values():
        h = as_function(layer)(h)
    loss = as_function(net.last_layer)(h, t[:100])
    report = audit_graph(loss)
    assert report.ok, str(report)
    held = [r.note for r in report.rows if r.note]
    assert any("kink" in n for n in held)  # real MNIST puts ReLU inputs on 0 and ties in pools


def test_audit_flags_a_wrong_book_layer_in_the_graph():
    (x, t), _ = load_mnist_mini()
    net = buggy.buggy_simpleconvnet()
    h = Tensor(x[:20].astype(np.float64))
    for layer in net.layers.values():
        h = as_function(layer)(h)
    report = audit_graph(as_function(net.last_layer)(h, t[:20]))
    assert [r.op for r in report.failed] == ["PoolingNoTranspose"]


def test_japanese_readme_has_every_code_block_of_the_readme():
    import re

    blocks = re.findall(r"```.*?```", (ROOT / "README.md").read_text(), re.S)
    ja = (ROOT / "README.ja.md").read_text()
    assert blocks and all(b in ja for b in blocks)
    assert "## 自作レイヤを検査する" in ja and "## 本書との対応" in ja
