"""MNIST in the book's format, a strict IDX reader, the embedded mini set, and mini-batches.

>>> (x_train, t_train), (x_test, t_test) = load_mnist(subset="mini")   # offline, bundled
>>> for xb, tb in BatchIterator(x_train, t_train, batch_size=100, seed=0): ...
"""

from __future__ import annotations

import copy
import hashlib
import http.client
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .io import PathLike, atomic_write, load_npz, parse_idx, read_idx, read_maybe_gzip

__all__ = [
    "MIRRORS",
    "MNISTNotFoundError",
    "BatchIterator",
    "load_mnist",
    "load_mnist_mini",
    "mnist_root",
    "read_idx",
]

log = logging.getLogger(__name__)

ENV_VAR = "TINYGRAD_CNN_DATA"
#: Tried in order; each serves the official ``.gz`` files under their official names.
MIRRORS: list[str] = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
]
TRAIN_IMAGES, TRAIN_LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"
FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)
#: md5 of the official ``.gz`` downloads (checked on download).
MD5_GZ: dict[str, str] = {
    TRAIN_IMAGES: "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    TRAIN_LABELS: "d53e105ee54ea40749a09fcbcd1e9432",
    TEST_IMAGES: "9fb629c4189551a2d022fa330f9573f3",
    TEST_LABELS: "ec29112dd5afa0611ce80d1b7f02629c",
}
#: Size in bytes of the official ``.gz`` downloads: a download is cut off past it.
SIZE_GZ: dict[str, int] = {
    TRAIN_IMAGES: 9_912_422,
    TRAIN_LABELS: 28_881,
    TEST_IMAGES: 1_648_877,
    TEST_LABELS: 4_542,
}
#: sha256 of the decompressed IDX files (checked on every load; any gzip copy passes).
SHA256_PAYLOAD: dict[str, str] = {
    TRAIN_IMAGES: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    TRAIN_LABELS: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    TEST_IMAGES: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    TEST_LABELS: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
#: sha256 of the bytes of each array in ``datasets/mnist_mini.npz`` (see MNIST_MINI.md).
MINI_SHA256: dict[str, str] = {
    "x_train": "2f7182bf021ffc5c1f62db987487f14d899b5c639f421a80f3095affc09a7db2",
    "t_train": "2f345bad07338ec537641465e169cc4b7288a44244f251211c7f842641e7d927",
    "x_test": "170ff6838184f9ec6aaa1bbb5932ed59b7463585418d2da081525165ef21edae",
    "t_test": "949a3782a9c308bf8ca08ff720810fe1de358fe09887727264c684c785d1ec53",
}

Split = tuple[np.ndarray, np.ndarray]


class MNISTNotFoundError(FileNotFoundError):
    """The MNIST files are not in the data root and could not be downloaded."""


def mnist_root(root: PathLike | None = None) -> Path:
    """Resolve the data folder: ``root``, else ``$TINYGRAD_CNN_DATA``, else the user cache."""
    if root is None:
        root = os.environ.get(ENV_VAR) or Path.home() / ".cache" / "tinygrad_cnn" / "mnist"
    return Path(root).expanduser()


def _find(root: Path, name: str) -> Path | None:
    for path in (root / name, root / f"{name}.gz"):
        if path.is_file():
            return path
    return None


def _fetch(url: str, f: Any, name: str, timeout: float, deadline: float) -> None:
    """Stream ``url`` into ``f``, at most ``SIZE_GZ[name]`` bytes within ``deadline`` seconds."""
    limit, md5 = SIZE_GZ[name], hashlib.md5(usedforsecurity=False)
    end = time.monotonic() + deadline
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        declared = resp.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ValueError(
                f"the server announces {int(declared):,} bytes, larger than the expected {limit:,}"
            )
        size = 0
        # read1 returns what one socket read brings, so a slow drip meets the deadline check
        while chunk := resp.read1(min(1 << 20, limit + 1 - size)):
            size += len(chunk)
            if size > limit:
                raise ValueError(f"the body is larger than the expected {limit:,} bytes")
            md5.update(chunk)
            f.write(chunk)
            if time.monotonic() > end:
                raise ValueError(f"not complete after the {deadline:g} s deadline ({size:,} bytes)")
    if md5.hexdigest() != MD5_GZ[name]:
        raise ValueError(f"md5 mismatch: got {md5.hexdigest()}, expected {MD5_GZ[name]}")


def _download(
    name: str,
    root: Path,
    mirrors: Sequence[str],
    dead: set[str],
    timeout: float,
    deadline: float,
    errors: list[str],
) -> Path | None:
    """Fetch ``name.gz`` from the first mirror that serves it intact; None if none does."""
    dest = root / f"{name}.gz"
    for mirror in mirrors:
        if mirror in dead:
            continue
        url = mirror if mirror.endswith("/") else mirror + "/"
        url += dest.name
        try:
            log.info("downloading %s", url)
            with atomic_write(dest) as f:
                _fetch(url, f, name, timeout, deadline)
            return dest
        except urllib.error.HTTPError as exc:
            errors.append(f"{url}: {exc}")
        except (OSError, http.client.HTTPException, ValueError) as exc:
            if isinstance(exc, OSError):  # unreachable host: don't try it for the other files
                dead.add(mirror)
            errors.append(f"{url}: {type(exc).__name__}: {exc}")
    return None


def _check_split(x: np.ndarray, t: np.ndarray, xp: Path, tp: Path) -> None:
    if x.ndim != 3 or x.shape[1:] != (28, 28):
        raise ValueError(f"{xp}: expected 28x28 images, got an IDX array of shape {x.shape}")
    if t.ndim != 1:
        raise ValueError(f"{tp}: expected a 1-d label file, got an IDX array of shape {t.shape}")
    if len(x) != len(t):
        raise ValueError(f"{xp} has {len(x)} images but {tp} has {len(t)} labels")
    if t.size and int(t.max()) > 9:
        raise ValueError(f"{tp}: labels must be 0-9, found {int(t.max())}")


def _format(x: np.ndarray, t: np.ndarray, normalize: bool, flatten: bool, one_hot: bool) -> Split:
    n = len(x)
    xf = np.divide(x, np.float32(255), dtype=np.float32) if normalize else x.astype(np.float32)
    xf = xf.reshape((n, 784) if flatten else (n, 1, 28, 28))
    if one_hot:
        tf = np.zeros((n, 10), np.float32)
        tf[np.arange(n), t] = 1.0
    else:
        tf = t.astype(np.int64)
    return xf, tf


def load_mnist(
    root: PathLike | None = None,
    normalize: bool = True,
    flatten: bool = False,
    one_hot_label: bool = False,
    download: bool = True,
    subset: str | None = None,
    *,
    mirrors: Sequence[str] | None = None,
    timeout: float = 30.0,
    deadline: float = 600.0,
) -> tuple[Split, Split]:
    """Load MNIST like the book's ``dataset.mnist.load_mnist``.

    Files are looked up in ``root`` (else ``$TINYGRAD_CNN_DATA``, else
    ``~/.cache/tinygrad_cnn/mnist``) as ``.gz`` or raw IDX, downloaded there if missing
    and ``download`` is true, and always verified against the official checksums.

    Parameters
    ----------
    normalize : bool
        Scale pixels to [0, 1]; otherwise keep 0..255 (float32 either way).
    flatten : bool
        Images as ``(N, 784)`` instead of ``(N, 1, 28, 28)``.
    one_hot_label : bool
        Labels as float32 ``(N, 10)`` one-hot instead of int64 ``(N,)``.
    subset : {None, "mini"}
        ``"mini"`` returns the bundled 10,000/2,000 subset (see :func:`load_mnist_mini`).
    mirrors : sequence of str, optional
        Base URLs to try in order (default :data:`MIRRORS`).
    timeout, deadline : float
        Seconds one network read may wait, and seconds one file's whole download may take.
        A body larger than the official file (:data:`SIZE_GZ`) is cut off too.

    Returns
    -------
    ((x_train, t_train), (x_test, t_test))
    """
    if subset is not None:
        if subset != "mini":
            raise ValueError(f"unknown MNIST subset {subset!r}; the only one is 'mini'")
        return load_mnist_mini(normalize, flatten, one_hot_label)
    root = mnist_root(root)
    paths = {name: _find(root, name) for name in FILES}
    errors: list[str] = []
    if download:
        dead: set[str] = set()
        mirrors = MIRRORS if mirrors is None else mirrors
        for name in [n for n in FILES if paths[n] is None]:
            paths[name] = _download(name, root, mirrors, dead, timeout, deadline, errors)
    missing = [name for name in FILES if paths[name] is None]
    if missing:
        tried = "\n".join(f"  {e}" for e in errors) or "  (download=False, nothing tried)"
        raise MNISTNotFoundError(
            f"MNIST files missing from {root}: {', '.join(missing)}.\nDownload attempts:\n"
            f"{tried}\nPut the four files in {root} (the official .gz files from the MNIST "
            f"site work as they are, decompressed ones too), or point the {ENV_VAR} "
            "environment variable (or root=...) at a folder holding them. "
            "load_mnist(subset='mini') works offline."
        )
    arrays = {}
    for name, path in paths.items():
        data = read_maybe_gzip(path)
        arrays[name] = parse_idx(data, path)
        digest = hashlib.sha256(data).hexdigest()
        if digest != SHA256_PAYLOAD[name]:
            raise ValueError(
                f"{path}: decompressed content has sha256 {digest}, expected "
                f"{SHA256_PAYLOAD[name]} (official {name}); the file is corrupt or not "
                "MNIST: delete or replace it"
            )
    out = []
    for xn, tn in ((TRAIN_IMAGES, TRAIN_LABELS), (TEST_IMAGES, TEST_LABELS)):
        _check_split(arrays[xn], arrays[tn], paths[xn], paths[tn])
        out.append(_format(arrays[xn], arrays[tn], normalize, flatten, one_hot_label))
    return out[0], out[1]


def load_mnist_mini(
    normalize: bool = True, flatten: bool = False, one_hot_label: bool = False
) -> tuple[Split, Split]:
    """Load the bundled subset: the first 10,000 training and 2,000 test images of MNIST.

    Works offline; same conventions and return format as :func:`load_mnist`, e.g. images
    ``(10000, 1, 28, 28)`` / ``(2000, 1, 28, 28)`` float32.
    """
    ref = resources.files(f"{__name__.rpartition('.')[0]}.datasets") / "mnist_mini.npz"
    with resources.as_file(ref) as path:
        arrays = load_npz(path)
    for key, expected in MINI_SHA256.items():
        arr = arrays.get(key)
        digest = None if arr is None else hashlib.sha256(np.ascontiguousarray(arr)).hexdigest()
        if digest != expected or arr.dtype != np.uint8:
            raise ValueError(
                f"{ref}: array {key!r} fails its checksum; the package data is damaged"
            )
    train = _format(arrays["x_train"], arrays["t_train"], normalize, flatten, one_hot_label)
    test = _format(arrays["x_test"], arrays["t_test"], normalize, flatten, one_hot_label)
    return train, test


class BatchIterator:
    """Mini-batches over aligned arrays, reshuffled (without replacement) every epoch.

    Parameters
    ----------
    *arrays : np.ndarray
        Arrays sharing their first dimension ``N``, e.g. ``x (N, 1, 28, 28)`` and ``t (N,)``.
    batch_size : int
        Rows per batch; the last batch of an epoch may be shorter unless ``drop_last``.
    shuffle : bool
        Draw a fresh permutation each epoch; otherwise keep the original order.
    seed : int or np.random.Generator, optional
        Seed for (or the generator itself) ``self.rng``.

    Iterating yields one tuple of batches per step, a new array per input gathered with
    the same indices. :meth:`state_dict` / :meth:`load_state_dict` save and restore the
    position, including mid-epoch, so a resumed run sees exactly the same batches.
    """

    def __init__(
        self,
        *arrays: np.ndarray,
        batch_size: int = 100,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int | np.random.Generator | None = None,
    ) -> None:
        if not arrays:
            raise ValueError("BatchIterator needs at least one array")
        self.arrays = tuple(np.asarray(a) for a in arrays)
        self.n = len(self.arrays[0])
        if any(a.ndim == 0 or len(a) != self.n for a in self.arrays):
            shapes = [a.shape for a in self.arrays]
            raise ValueError(
                f"BatchIterator: arrays must share their first dimension, got shapes {shapes}"
            )
        if not isinstance(batch_size, int | np.integer) or isinstance(batch_size, bool):
            raise TypeError(f"BatchIterator: batch_size must be an int, got {batch_size!r}")
        if batch_size < 1:
            raise ValueError(f"BatchIterator: batch_size must be >= 1, got {batch_size}")
        self.batch_size, self.shuffle, self.drop_last = int(batch_size), shuffle, drop_last
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self._epoch_state: dict[str, Any] | None = None  # rng state when this epoch began
        self._done = 0  # batches handed out in the current epoch
        self._skip = 0  # batches to skip on the next epoch (set by load_state_dict)

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def __iter__(self) -> Iterator[tuple[np.ndarray, ...]]:
        start = self.rng.bit_generator.state
        order = self.rng.permutation(self.n) if self.shuffle else np.arange(self.n)
        skip, self._skip = self._skip, 0
        for b in range(skip, len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            self._epoch_state, self._done = start, b + 1
            yield tuple(np.take(a, idx, axis=0) for a in self.arrays)
        self._epoch_state, self._done = None, 0

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable position: generator state and batches done in this epoch."""
        if self._skip:  # restored but not yet iterated
            return {"bit_generator": self.rng.bit_generator.state, "batches_done": self._skip}
        if self._epoch_state is not None:
            return {"bit_generator": copy.deepcopy(self._epoch_state), "batches_done": self._done}
        return {"bit_generator": self.rng.bit_generator.state, "batches_done": 0}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; the next epoch resumes exactly where it left off.

        The state is checked first (``ValueError`` naming the problem); nothing changes if
        it is bad.
        """
        if not isinstance(state, dict) or "bit_generator" not in state:
            raise ValueError("BatchIterator.load_state_dict: state needs a 'bit_generator' entry")
        done = state.get("batches_done", 0)
        if type(done) is not int or not 0 <= done <= len(self):
            raise ValueError(
                f"BatchIterator.load_state_dict: batches_done must be an int in [0, {len(self)}], "
                f"got {done!r}"
            )
        probe = type(self.rng.bit_generator)()
        try:
            probe.state = copy.deepcopy(state["bit_generator"])
        except (ValueError, TypeError, KeyError) as e:
            raise ValueError(
                f"BatchIterator.load_state_dict: bad generator state for "
                f"{type(probe).__name__} ({type(e).__name__}: {e})"
            ) from None
        self.rng.bit_generator.state = probe.state
        self._skip = done
        self._epoch_state, self._done = None, 0
