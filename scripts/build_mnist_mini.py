"""Build ``tinygrad_cnn/datasets/mnist_mini.npz`` from the official MNIST files.

Usage: ``python scripts/build_mnist_mini.py [MNIST_DIR] [OUT_FILE]``

``MNIST_DIR`` holds the four official IDX files (``.gz`` or raw); it defaults to
``../shared/data/mnist`` beside the repository. The output keeps the first 10,000 training
and the first 2,000 test images and labels as uint8 (images ``(N, 28, 28)``), under the keys
``x_train, t_train, x_test, t_test``. The script prints the sha256 of every array's bytes
and of the file: record them in ``data.MINI_SHA256`` and ``datasets/MNIST_MINI.md``.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tinygrad_cnn.data import FILES, SHA256_PAYLOAD  # noqa: E402
from tinygrad_cnn.io import parse_idx, read_maybe_gzip, save_npz  # noqa: E402

N_TRAIN, N_TEST = 10_000, 2_000


def main(argv: list[str]) -> int:
    src = Path(argv[1]) if len(argv) > 1 else REPO.parent / "shared" / "data" / "mnist"
    out = Path(argv[2]) if len(argv) > 2 else REPO / "tinygrad_cnn" / "datasets" / "mnist_mini.npz"
    official = []
    for name in FILES:
        path = src / name if (src / name).is_file() else src / f"{name}.gz"
        payload = read_maybe_gzip(path)
        if hashlib.sha256(payload).hexdigest() != SHA256_PAYLOAD[name]:
            raise SystemExit(f"{path}: not the official {name} (sha256 mismatch)")
        official.append(parse_idx(payload, path))
    x_train, t_train, x_test, t_test = official
    arrays = {
        "x_train": np.ascontiguousarray(x_train[:N_TRAIN]),
        "t_train": np.ascontiguousarray(t_train[:N_TRAIN]),
        "x_test": np.ascontiguousarray(x_test[:N_TEST]),
        "t_test": np.ascontiguousarray(t_test[:N_TEST]),
    }
    save_npz(out, arrays, compressed=True)
    for key, arr in arrays.items():
        digest = hashlib.sha256(arr.tobytes()).hexdigest()
        print(f"{key:8s} {str(arr.shape):16s} {arr.dtype}  sha256 {digest}")
    file_sum = hashlib.sha256(out.read_bytes()).hexdigest()
    print(f"file     {out.stat().st_size} bytes  sha256 {file_sum}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
