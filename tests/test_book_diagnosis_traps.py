"""Diagnoses that a user trial found wrong: a bias summed over the wrong axis, checked through
a whole network (where softmax-loss rows sum to 0), and batch norm without its mean term.

The correct book-style layers are those of ``examples/book_layers/layers.py``; the bugs are
planted here (and batch norm's missing mean in ``examples/book_layers/buggy.py``).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from tinygrad_cnn import cli_check
from tinygrad_cnn.book import check_layer, check_network
from tinygrad_cnn.bookdiag import Evidence, diagnose

FOLDER = Path(__file__).resolve().parents[1] / "examples" / "book_layers"
layers = cli_check._import_file(FOLDER / "layers.py")
buggy = cli_check._import_file(FOLDER / "buggy.py")
Affine, Relu, SoftmaxWithLoss = layers.Affine, layers.Relu, layers.SoftmaxWithLoss
BatchNormalization, BatchNormNoMean = layers.BatchNormalization, buggy.BatchNormNoMean


class AffineBiasAxis1(Affine):
    def backward(self, dout):
        dx = super().backward(dout)
        self.db = np.sum(dout, axis=1)  # BUG: axis=1 instead of axis=0
        return dx


class TwoLayerNet:
    """The book's ch. 5 network; ``affine2`` chooses the class of its second Affine layer."""

    def __init__(self, affine2=Affine, sizes=(12, 8, 10), weight_init_std=0.01, seed=0):
        rng = np.random.default_rng(seed)
        i, h, o = sizes
        self.params = {
            "W1": weight_init_std * rng.standard_normal((i, h)),
            "b1": 0.1 * rng.standard_normal(h),
            "W2": weight_init_std * rng.standard_normal((h, o)),
            "b2": 0.1 * rng.standard_normal(o),
        }
        self.layers = OrderedDict()
        self.layers["Affine1"] = Affine(self.params["W1"], self.params["b1"])
        self.layers["Relu1"] = Relu()
        self.layers["Affine2"] = affine2(self.params["W2"], self.params["b2"])
        self.last_layer = SoftmaxWithLoss()

    def predict(self, x):
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x, t):
        return self.last_layer.forward(self.predict(x), t)

    def gradient(self, x, t):
        self.loss(x, t)
        dout = self.last_layer.backward(1)
        for layer in reversed(self.layers.values()):
            dout = layer.backward(dout)
        a1, a2 = self.layers["Affine1"], self.layers["Affine2"]
        return {"W1": a1.dW, "b1": a1.db, "W2": a2.dW, "b2": a2.db}


def data(n: int, features: int = 12, classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return rng.standard_normal((n, features)), rng.integers(0, classes, n)


def test_the_correct_two_layer_net_checks_right():
    assert check_network(TwoLayerNet(), *data(10)).ok


@pytest.mark.parametrize("n", [10, 7, 13])
def test_a_bias_summed_over_the_wrong_axis_is_named_so_at_the_network_level(n):
    report = check_network(TwoLayerNet(AffineBiasAxis1), *data(n))
    rows = {r.name: r for r in report.rows}
    assert [k for k, r in rows.items() if not r.ok] == ["b2"], str(report)
    diagnosis = rows["b2"].diagnosis
    assert diagnosis.code == "bias-axis", str(report)
    assert "Affine2.db" in diagnosis.message and "mask" not in diagnosis.message, str(report)
    layer_rows = {(rep.layer, r.name): r for rep in report.layers for r in rep.rows}
    assert layer_rows[("Affine2", "db")].diagnosis.code == "bias-axis"
    assert report.first_wrong == "Affine2"


def test_a_parameter_gradient_of_zeros_is_never_called_a_mask_bug():
    rng = np.random.default_rng(0)
    numeric = rng.standard_normal(10)
    for network in (False, True):
        ev = Evidence(
            "db", "b", (10,), np.zeros(10), None, numeric, np.zeros(10, bool), network=network
        )
        assert not diagnose(ev).code.startswith("mask"), network


def test_an_inverted_relu_mask_that_zeroes_every_element_is_still_a_mask_bug():
    class ReluInverted(Relu):
        def backward(self, dout):
            dout[~self.mask] = 0  # BUG: every input is positive, so all of dx is zeroed
            return dout

    x = np.abs(np.random.default_rng(2).standard_normal((4, 5))) + 0.5
    assert check_layer(ReluInverted(), x).rows[0].diagnosis.code == "mask-inverted"


def test_the_books_log_delta_is_a_near_miss_not_a_mask_or_a_transpose():
    # Weights 50 times the book's: probabilities below 0.01, where log(y + 1e-7) shows.
    report = check_network(TwoLayerNet(weight_init_std=0.5), *data(10))
    wrong = [r for r in report.rows if not r.ok]
    wrong += [r for rep in report.layers for r in rep.rows if not r.ok]
    assert wrong and report.first_wrong == "last_layer", str(report)
    for r in wrong:
        assert r.diagnosis.code == "unrecognised", str(report)
        assert "close to right everywhere" in r.diagnosis.message, str(report)
        assert "log(y + 1e-7)" in r.diagnosis.message


class BatchNormNoVar(BatchNormalization):
    def backward(self, dout):  # BUG: the variance term (dxc += 2/N * xc * dvar) left out
        self.dbeta, self.dgamma = dout.sum(axis=0), np.sum(self.xn * dout, axis=0)
        dxc = self.gamma * dout / self.std
        return dxc - np.sum(dxc, axis=0) / self.batch_size


def batch_norm(cls, n: int = 8, d: int = 5, max_elements: int = 2048):
    rng = np.random.default_rng(4)
    layer = cls(1 + 0.1 * rng.standard_normal(d), 0.1 * rng.standard_normal(d))
    return check_layer(layer, rng.standard_normal((n, d)) * 2 + 1, max_elements=max_elements)


def test_the_correct_batch_norm_checks_right():
    assert batch_norm(BatchNormalization).ok


@pytest.mark.parametrize("max_elements", [2048, 20])  # every element, or a sample
def test_batch_norm_without_its_mean_term_is_named(max_elements):
    report = batch_norm(BatchNormNoMean, max_elements=max_elements)
    assert [r.name for r in report.rows if not r.ok] == ["dx"], str(report)
    diagnosis = report.rows[0].diagnosis
    assert diagnosis.code == "missing-mean", str(report)
    assert "dmu / N" in diagnosis.message
    if max_elements > 40:  # every sample of a feature checked: the sum over the batch is shown
        assert "sums to 0 over the batch" in diagnosis.message


def test_batch_norm_without_its_variance_term_is_not_called_a_missing_mean():
    report = batch_norm(BatchNormNoVar)
    assert report.rows[0].diagnosis.code == "unrecognised", str(report)
