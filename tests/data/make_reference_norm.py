"""Regenerate ``tests/data/reference_norm.{json,npz}``: PyTorch float64 batch normalisation in
training and evaluation mode (needs ``torch``; the tests only read the files).

    python tests/data/make_reference_norm.py [--seed 0]

The json lists, per case, ``case`` (``NNN``), ``training``, ``momentum``, ``eps``, ``affine``
(False: no weight and bias) and ``shape``. The npz holds ``NNN.<field>``: the input ``x``,
``weight`` and ``bias`` (C,), the running statistics before the call ``running_mean`` and
``running_var`` (C,), an upstream gradient ``gy``; PyTorch's output ``y``, the gradients
``gx``, ``gweight``, ``gbias`` of ``<y, gy>`` and the running statistics after the call,
``running_mean_after`` and ``running_var_after`` (updated in place by
``torch.nn.functional.batch_norm`` in training). Both files are written through a temporary
file and a rename.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as tf

OUT = Path(__file__).resolve().parent

#: (shape, training, momentum, eps, affine); momentum 0.1 and eps 1e-7 are the book's defaults
CASES = [
    ((8, 5), True, 0.1, 1e-5, True),
    ((8, 5), False, 0.1, 1e-5, True),
    ((2, 3), True, 0.1, 1e-7, True),  # the smallest batch: N = 2
    ((6, 4), True, 0.3, 1e-3, False),
    ((4, 3, 5), True, 0.1, 1e-5, True),  # BatchNorm1d on (N, C, L)
    ((4, 3, 5), False, 0.1, 1e-5, True),
    ((5, 3, 4, 6), True, 0.1, 1e-5, True),
    ((5, 3, 4, 6), False, 0.1, 1e-5, True),
    ((3, 2, 3, 3), True, 0.1, 1e-7, True),
    ((1, 4, 2, 3), True, 0.9, 1e-5, True),  # one image: statistics over H, W only
    ((3, 2, 3, 3), False, 0.1, 1e-7, False),
]


def run(rng: np.random.Generator, shape, training, momentum, eps, affine) -> dict:
    C = shape[1]
    noise = 2.0 * rng.standard_normal(shape)
    shift = rng.standard_normal((1, C) + (1,) * (len(shape) - 2))  # a mean per channel
    arrays = {
        "x": noise + shift,
        "weight": rng.uniform(0.5, 2.0, C) * rng.choice([-1.0, 1.0], C),
        "bias": rng.standard_normal(C),
        "running_mean": rng.standard_normal(C),
        "running_var": rng.uniform(0.2, 3.0, C),
        "gy": rng.standard_normal(shape),
    }
    x = torch.tensor(arrays["x"], requires_grad=True)
    w = torch.tensor(arrays["weight"], requires_grad=True) if affine else None
    b = torch.tensor(arrays["bias"], requires_grad=True) if affine else None
    rm, rv = torch.tensor(arrays["running_mean"]), torch.tensor(arrays["running_var"])
    y = tf.batch_norm(x, rm, rv, w, b, training=training, momentum=momentum, eps=eps)
    (y * torch.tensor(arrays["gy"])).sum().backward()
    arrays.update(y=y.detach().numpy(), gx=x.grad.numpy())
    if affine:
        arrays.update(gweight=w.grad.numpy(), gbias=b.grad.numpy())
    arrays.update(running_mean_after=rm.numpy(), running_var_after=rv.numpy())
    return arrays


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_default_dtype(torch.float64)
    rng = np.random.default_rng(args.seed)
    metas, arrays = [], {}
    for i, (shape, training, momentum, eps, affine) in enumerate(CASES):
        key = f"{i:03d}"
        metas.append({"case": key, "training": training, "momentum": momentum, "eps": eps,
                      "affine": affine, "shape": list(shape)})  # fmt: skip
        for k, v in run(rng, shape, training, momentum, eps, affine).items():
            arrays[f"{key}.{k}"] = np.asarray(v, dtype=np.float64)

    def write_npz(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)

    _write_atomically(args.out / "reference_norm.npz", write_npz)
    _write_atomically(args.out / "reference_norm.json",
                      lambda tmp: tmp.write_text(json.dumps(metas, indent=1) + "\n"))  # fmt: skip
    print(f"wrote {len(metas)} cases to {args.out}/reference_norm.* (PyTorch {torch.__version__})")


if __name__ == "__main__":
    main()
