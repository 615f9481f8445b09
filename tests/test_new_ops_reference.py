"""The ops of issue 12 against PyTorch: forward results and gradients in float64, read from
``tests/data/reference_ops.{json,npz}`` (made by ``tests/data/make_reference_ops.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import tinygrad_cnn.functional as F
from tinygrad_cnn import Tensor

DATA = Path(__file__).resolve().parent / "data"
CASES = json.loads((DATA / "reference_ops.json").read_text())
ARRAYS = np.load(DATA / "reference_ops.npz")
TOL = {"rtol": 1e-10, "atol": 1e-12}


def _call(meta: dict, args: list):
    kwargs = dict(meta["kwargs"])
    if meta["fn"] in ("cat", "stack"):  # they take one list of tensors
        args = [args]
    if meta["fn"] == "expand":
        return F.expand(*args, *kwargs.pop("sizes"))
    if meta["fn"] == "flip" or "axis" in kwargs and isinstance(kwargs["axis"], list):
        kwargs["axis"] = tuple(kwargs["axis"])
    return getattr(F, meta["fn"])(*args, **kwargs)


@pytest.mark.parametrize("meta", CASES, ids=[f"{c['case']}-{c['fn']}" for c in CASES])
def test_matches_pytorch(meta):
    key = meta["case"]
    args = []
    for name in meta["inputs"]:
        a = ARRAYS[f"{key}.{name}"]
        if a.ndim == 0 and a.dtype.kind == "f":
            args.append(float(a))  # a Python number (the base of pow)
        else:
            args.append(Tensor(a, requires_grad=name in meta["grad"]) if a.dtype.kind == "f" else a)
    out = _call(meta, args)
    outs = out if isinstance(out, tuple) else (out,)
    assert len(outs) == meta["outputs"]
    total = None
    for i, y in enumerate(outs):
        expected = ARRAYS[f"{key}.y{i}"]
        assert y.shape == expected.shape, (y.shape, expected.shape)
        np.testing.assert_allclose(y.numpy(), expected, **TOL, err_msg=f"output {i}")
        if f"{key}.gy{i}" in ARRAYS:
            term = (y * ARRAYS[f"{key}.gy{i}"]).sum()
            total = term if total is None else total + term
    if not meta["grad"]:
        assert all(y.dtype.kind == "i" for y in outs)
        return
    total.backward()
    for name, t in zip(meta["inputs"], args, strict=True):
        if name in meta["grad"]:
            np.testing.assert_allclose(t.grad, ARRAYS[f"{key}.g.{name}"], **TOL, err_msg=name)


def test_every_new_functional_wrapper_has_a_pytorch_case():
    from tinygrad_cnn import functional_nn, functional_tensor

    covered = {c["fn"] for c in CASES}
    # dropout is random (PyTorch's generator is not ours): tests/test_new_ops.py checks it;
    # batch_norm has its own vectors (reference_norm.*, read by tests/test_batch_norm.py)
    own_vectors = {"dropout", "batch_norm"}
    wanted = set(functional_tensor.__all__) | set(functional_nn.__all__) - own_vectors
    assert wanted - {"clamp"} <= covered, sorted(wanted - covered)
