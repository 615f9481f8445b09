"""Safe file I/O: atomic writes, ``.npz`` archives, restricted unpickling and IDX files.

Everything that writes goes through :func:`atomic_write`, so a crash or an exception
mid-write never leaves a truncated file behind: the previous version stays in place
until the new one is complete and flushed to disk.
"""

from __future__ import annotations

import errno
import gzip
import math
import os
import pickle
import tempfile
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = ["atomic_write", "save_npz", "load_npz", "load_book_pickle", "read_idx"]

PathLike = str | os.PathLike

# Read once at import: os.umask can only be queried by setting it, which is not thread-safe.
_UMASK = os.umask(0)
os.umask(_UMASK)


def _missing(path: Path, what: str = "file") -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, f"no such {what}: {path}", str(path))


@contextmanager
def atomic_write(path: PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Open ``path`` for writing so that it is replaced atomically on success.

    Data goes to a temporary file in the same directory, which is flushed, fsynced and
    then moved onto ``path`` with :func:`os.replace`. If the ``with`` block raises, the
    temporary file is deleted and any existing file at ``path`` is left untouched.
    Missing parent directories are created.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file.
    mode : {"wb", "w", "wt"}
        Binary or text write mode.
    encoding : str, optional
        Text encoding for text modes (default UTF-8).

    Yields
    ------
    file object
        The open temporary file.
    """
    if mode not in ("wb", "w", "wt"):
        raise ValueError(f"atomic_write supports modes 'wb', 'w' and 'wt', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    try:
        perms = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        perms = 0o666 & ~_UMASK
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, perms)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Persist a rename by syncing its directory (best effort; not possible everywhere)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_npz(path: PathLike, arrays: Mapping[str, np.ndarray], compressed: bool = False) -> None:
    """Atomically save named arrays to ``path`` (the name is kept exactly as given).

    Parameters
    ----------
    path : str or os.PathLike
        Destination; no ``.npz`` suffix is appended.
    arrays : Mapping[str, np.ndarray]
        Arrays of any shape and non-object dtype.
    compressed : bool
        Use :func:`numpy.savez_compressed` instead of :func:`numpy.savez`.
    """
    clean: dict[str, np.ndarray] = {}
    for key, value in arrays.items():
        if not isinstance(key, str):
            raise TypeError(f"save_npz: array names must be str, got {type(key).__name__}")
        arr = np.asarray(value)
        if arr.dtype.hasobject:
            raise ValueError(f"save_npz: array {key!r} has object dtype, which cannot be saved")
        clean[key] = arr
    writer = np.savez_compressed if compressed else np.savez
    with atomic_write(path, "wb") as f:
        writer(f, **clean)


def load_npz(path: PathLike) -> dict[str, np.ndarray]:
    """Load every array of an ``.npz`` archive, refusing pickled (object) data.

    Parameters
    ----------
    path : str or os.PathLike
        An archive written by :func:`save_npz` or :func:`numpy.savez`.

    Returns
    -------
    dict[str, np.ndarray]
        The arrays by name, fully read into memory.
    """
    path = Path(path)
    if not path.is_file():
        raise _missing(path, ".npz file")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("it is a single .npy array, not an .npz archive")
        with archive:
            return {key: archive[key] for key in archive.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(
            f"cannot load {path}: not a valid .npz archive of plain arrays "
            f"(object/pickled arrays are refused): {exc}"
        ) from exc


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """Stand-in for ``_codecs.encode``, which protocol-2 pickles use to store bytes."""
    if not isinstance(text, str) or encoding.lower().replace("-", "") != "latin1":
        raise pickle.UnpicklingError("_codecs.encode is only allowed for latin1 byte strings")
    return text.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    # Take the reconstructors from NumPy itself instead of importing private module paths.
    reconstruct = np.zeros(1).__reduce__()[0]
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]
    allowed: dict[tuple[str, str], Any] = {("_codecs", "encode"): _latin1_encode}
    for mod in ("numpy.core", "numpy._core"):
        allowed[(f"{mod}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{mod}.numeric", "_frombuffer")] = frombuffer
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    return allowed


class _RefusedGlobal(ValueError):
    pass


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals NumPy arrays need."""

    def __init__(self, file: IO[bytes], path: Path) -> None:
        super().__init__(file, encoding="latin1")  # latin1 also reads Python 2 array pickles
        self._path = path
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            module = "builtins" if module == "__builtin__" else module  # protocol <= 2 name
            raise _RefusedGlobal(
                f"refusing to unpickle {module}.{name} from {self._path}: "
                "only NumPy arrays and plain containers are allowed"
            ) from None


def load_book_pickle(path: PathLike) -> dict[str, np.ndarray]:
    """Load a *Deep Learning from Scratch* parameter pickle without running its code.

    The file (e.g. the book's ``params.pkl``) must hold a dict of name -> ndarray such
    as ``W1, b1, W2, b2, W3, b3``. Unpickling goes through a restricted loader that can
    only build NumPy arrays, dtypes and built-in containers, so a crafted file cannot
    call ``os.system``, ``eval`` or anything else.

    Parameters
    ----------
    path : str or os.PathLike
        The pickle file.

    Returns
    -------
    dict[str, np.ndarray]
        The parameters by name.
    """
    path = Path(path)
    if not path.is_file():
        raise _missing(path, "pickle file")
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, path).load()
    except _RefusedGlobal as exc:
        raise ValueError(str(exc)) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"cannot unpickle {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, expected a dict of arrays")
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, np.ndarray):
            raise ValueError(
                f"{path}: expected str -> ndarray entries, got {key!r}: {type(value).__name__}"
            )
        if value.dtype.hasobject:
            raise ValueError(f"{path}: array {key!r} has object dtype, which is refused")
    return dict(obj)


_IDX_NDIM = {0x00000801: 1, 0x00000803: 3}  # type byte 0x08 (uint8): labels / images


def read_maybe_gzip(path: Path) -> bytes:
    """Return the content of ``path``, gunzipped if it starts with the gzip magic."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"{path}: corrupt gzip data ({exc})") from exc
    return data


def parse_idx(data: bytes, source: PathLike) -> np.ndarray:
    """Parse uint8 IDX ``data`` (from ``source``, named in errors) into a read-only view."""
    magic = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if magic not in _IDX_NDIM:
        found = "a file shorter than 4 bytes" if magic is None else f"0x{magic:08x}"
        raise ValueError(
            f"{source}: not an MNIST IDX file: magic number is {found}, expected 0x00000801 "
            "(uint8 labels) or 0x00000803 (uint8 images)"
        )
    ndim = _IDX_NDIM[magic]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{source}: truncated IDX header ({len(data)} of {header} bytes)")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + math.prod(dims)
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise ValueError(
            f"{source}: IDX data {what}: header declares shape {dims}, so expected "
            f"{expected} bytes, got {len(data)}"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def read_idx(path: PathLike) -> np.ndarray:
    """Read a uint8 IDX file (MNIST format, gzip-compressed or raw), validating its structure.

    Returns
    -------
    np.ndarray
        uint8, shape ``(N,)`` for a label file or ``(N, rows, cols)`` for an image file.
    """
    path = Path(path)
    if not path.is_file():
        raise _missing(path, "IDX file")
    return parse_idx(read_maybe_gzip(path), path).copy()
