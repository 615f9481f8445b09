"""Anomaly mode: the first op that makes NaN/Inf, named with the user's line."""

from __future__ import annotations

import contextlib
import inspect
import os

import numpy as np
import pytest

from tinygrad_cnn import Function, Tensor, no_grad
from tinygrad_cnn.anomaly import AnomalyError, detect_anomaly

HERE = os.path.basename(__file__)


class AnomalyTestSqrt(Function):
    def forward(self, x):
        y = np.sqrt(x)
        self.save(y=y)
        return y

    def backward(self, gy):
        with np.errstate(divide="ignore"):
            return gy / (2 * self.saved["y"])


# ----------------------------------------------------------------------------- anomaly mode
def test_forward_nan_names_op_and_line():
    x = Tensor(np.array([1.0, -1.0, 2.0], np.float32), requires_grad=True)
    with pytest.raises(AnomalyError) as info, np.errstate(invalid="ignore"):
        with detect_anomaly():
            y = x * 2.0
            line = inspect.currentframe().f_lineno + 1
            y.log()
    err = info.value
    msg = str(err)
    assert err.phase == "forward" and err.op.name == "Log"
    assert "Log produced nan" in msg and "(3,) float32" in msg
    assert f"{HERE}:{line} in test_forward_nan_names_op_and_line" in msg
    assert "y.log()" in msg and err.where.endswith(f"{HERE}:{line} in {inspect.stack()[0][3]}")


def test_backward_inf_names_op_and_line():
    x = Tensor(np.array([4.0, 0.0, 1.0]), requires_grad=True)
    with pytest.raises(AnomalyError) as info:
        with detect_anomaly():
            line = inspect.currentframe().f_lineno + 1
            y = AnomalyTestSqrt.apply(x)
            (y * 3.0).sum().backward()
    msg = str(info.value)
    assert info.value.phase == "backward" and info.value.op.name == "AnomalyTestSqrt"
    assert "backward produced inf in the gradient of input 0 (shape (3,))" in msg
    assert f"{HERE}:{line} in " in msg and "(3,) float64" in msg
    assert x.grad is None


def test_anomaly_hooks_are_removed_and_quiet_outside():
    x = Tensor(np.array([-1.0, 0.0]), requires_grad=True)
    with pytest.raises(AnomalyError), np.errstate(all="ignore"), detect_anomaly():
        x.log()
    with np.errstate(all="ignore"):
        y = x.log()  # nan and -inf, but the mode is off
        y.sum().backward()
    assert np.isnan(y.data[0]) and np.isinf(x.grad[1])
    with detect_anomaly():  # finite values pass untouched
        (Tensor(np.ones(2), requires_grad=True) * 2.0).sum().backward()
    with np.errstate(all="ignore"):
        x.log().sum().backward()  # off again after a clean block


def test_anomaly_blames_inputs_that_arrive_broken():
    x = Tensor(np.array([np.nan, 1.0]), requires_grad=True)
    with pytest.raises(AnomalyError, match="input 0 already held nan/inf"), detect_anomaly():
        x * 2.0


def test_anomaly_also_watches_ops_that_are_not_recorded():
    for requires_grad, context in ((False, contextlib.nullcontext), (True, no_grad)):
        x = Tensor(np.array([-1.0, 2.0]), requires_grad=requires_grad)
        with pytest.raises(AnomalyError, match="Log produced nan"), np.errstate(invalid="ignore"):
            with detect_anomaly(), context():
                x.log()
