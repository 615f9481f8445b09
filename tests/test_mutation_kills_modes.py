"""A real bug found while killing the ``predict_classes`` mutants (issue 13).

``predict_classes`` (and so ``accuracy``, ``SimpleConvNet.accuracy`` and ``Trainer``) saved only
the root module's ``training`` flag and restored it on every sub-module, so a sub-module whose
mode differed from its parent's (e.g. a dropout switched off by hand in a training network)
came back in the parent's mode. This test failed on that code; the lead fixed it in ad74047.
"""

from __future__ import annotations

import numpy as np

from tinygrad_cnn import Tensor
from tinygrad_cnn.models import accuracy
from tinygrad_cnn.nn import Dropout, Linear, Module, ReLU, Sequential, predict_classes


def _net() -> Sequential:
    return Sequential(Linear(6, 16, rng=0), ReLU(), Dropout(0.5, rng=1), Linear(16, 3, rng=2))


def _modes(net: Module) -> dict[str, bool]:
    return {name: m.training for name, m in net.named_modules()}


def test_prediction_restores_each_submodules_own_mode() -> None:
    """A training network whose dropout was switched off by hand keeps it off."""
    x = np.random.default_rng(0).normal(size=(20, 6)).astype(np.float32)
    net = _net().train()
    net[2].eval()
    modes = _modes(net)
    predict_classes(net, x)
    assert _modes(net) == modes
    out = net(Tensor(x)).numpy()
    np.testing.assert_array_equal(out, net(Tensor(x)).numpy())  # dropout still off
    accuracy(net, x, out.argmax(axis=1))
    assert _modes(net) == modes
