"""Safe file I/O: atomic writes, ``.npz`` archives, state-dict checks and IDX files.

Everything that writes goes through :func:`atomic_write`, so a crash or an exception
mid-write never leaves a truncated file behind: the previous version stays in place
until the new one is complete and flushed to disk.
"""

from __future__ import annotations

import errno
import gzip
import math
import os
import re
import stat
import tempfile
import time
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = [
    "atomic_write", "save_npz", "load_npz", "npz_info", "check_state_dict", "read_idx",
    "MAX_LOAD_BYTES",
]  # fmt: skip

PathLike = str | os.PathLike

#: Default cap on the bytes one file may allocate (``load_npz``, ``load_book_pickle``).
MAX_LOAD_BYTES = 1 << 30
#: A temp file of ours whose writer is gone (or, without a PID in its name, this old) is stale.
STALE_TMP_SECONDS = 60.0

# Read once at import: os.umask can only be queried by setting it, which is not thread-safe.
_UMASK = os.umask(0)
os.umask(_UMASK)


def check_readable_file(path: Path, what: str = "file") -> None:
    """Raise unless ``path`` is an existing regular file (a FIFO would block a reader).

    Raises ``FileNotFoundError`` when nothing is there, ``IsADirectoryError`` for a folder and
    ``ValueError`` for a device, FIFO or socket, each naming the path and ``what`` was wanted.
    """
    try:
        st = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise FileNotFoundError(errno.ENOENT, f"no such {what}", str(path)) from None
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, f"{path} is a directory, not a {what}", str(path))
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path} is a {_file_kind(st.st_mode)}, not a regular {what}")


@contextmanager
def atomic_write(path: PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Open ``path`` for writing so that it is replaced atomically on success.

    Data goes to a temporary file ``.<name>.<pid>.<random>.tmp`` in the same directory,
    which is flushed, fsynced and then moved onto ``path`` with :func:`os.replace`. If the
    ``with`` block raises, the temporary file is deleted and any existing file at ``path`` is
    left untouched. A leading ``~`` is the home folder; missing parent directories are
    created. Temporary files of this naming for the same ``path`` left behind by a killed
    writer are removed first.

    Parameters
    ----------
    path : str or os.PathLike
        Destination: a new path or an existing regular file (a directory, device, FIFO or
        socket is refused with ``ValueError``, never replaced).
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
    path = Path(path).expanduser()  # "~/x.npz" is the home folder, not a folder named "~"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        # The innermost ancestor that exists is the one in the way.
        blocker = next((p for p in path.parents if os.path.lexists(p)), path.parent)
        raise NotADirectoryError(
            errno.ENOTDIR, f"cannot write {path}: {blocker} is not a folder", str(path)
        ) from None
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    try:
        st = path.stat()
    except FileNotFoundError:
        perms = 0o666 & ~_UMASK
    else:
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(
                f"atomic_write: refusing to replace {path}: it exists and is not a regular file "
                f"(it is a {_file_kind(st.st_mode)})"
            )
        perms = st.st_mode & 0o7777
    remove_stale_temp_files(path)
    prefix = f".{path.name}.{os.getpid()}."
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=".tmp")
    except OSError as e:  # name the user's path, not the temporary file's
        raise type(e)(
            e.errno, f"cannot write {path}: cannot create a file in {path.parent} ({e.strerror})",
            str(path),
        ) from e  # fmt: skip
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


def _file_kind(mode: int) -> str:
    kinds = (
        (stat.S_ISDIR, "directory"), (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"),
    )  # fmt: skip
    return next((name for test, name in kinds if test(mode)), "special file")


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":
        return True  # cannot tell cheaply: rely on the age rule
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0
    return True


def remove_stale_temp_files(path: PathLike, max_age: float = STALE_TMP_SECONDS) -> list[Path]:
    """Delete temporary files that :func:`atomic_write` left for ``path`` when killed.

    Only regular files named ``.<name>.<pid>.<random>.tmp`` whose writer process is gone, or
    ``.<name>.<random>.tmp`` (the name of earlier versions, no PID) older than ``max_age``
    seconds, are removed; anything else is kept. Best effort: errors are ignored.

    Returns
    -------
    list[Path]
        The files removed.
    """
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(?:(\d+)\.)?[a-z0-9_]{{8}}\.tmp")
    removed = []
    now = time.time()
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                continue
            pid, age = match.group(1), now - st.st_mtime
            if pid is None:
                stale = age > max_age
            elif int(pid) == os.getpid():
                stale = False  # another thread of this process may be writing it
            else:  # a day-old file of a live PID is from a recycled PID
                stale = not _pid_alive(int(pid)) or age > 86400.0
            if stale:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


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


ArrayInfo = tuple[tuple[int, ...], np.dtype]


def _scan_npz(path: Path, max_bytes: int) -> dict[str, tuple[zipfile.ZipInfo, ArrayInfo]]:
    """Read every member's ``.npy`` header (never its data) and check it against the zip."""
    check_readable_file(path, ".npz file")
    found: dict[str, tuple[zipfile.ZipInfo, ArrayInfo]] = {}
    total = 0
    try:
        with open(path, "rb") as f:
            if f.read(6) == b"\x93NUMPY":
                raise ValueError("it is a single .npy array, not an .npz archive")
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                key = info.filename[:-4] if info.filename.endswith(".npy") else None
                if key is None or key in found:
                    what = "duplicate" if key else "a non-.npy"
                    raise ValueError(f"it holds {what} member {info.filename!r}")
                with zf.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(member)
                    elif version == (2, 0):
                        shape, _, dtype = np.lib.format.read_array_header_2_0(member)
                    else:
                        raise ValueError(f"member {key!r} has unsupported .npy version {version}")
                    header = member.tell()
                if dtype.hasobject:
                    raise ValueError(f"array {key!r} has object dtype (pickled data is refused)")
                nbytes = math.prod(shape) * dtype.itemsize
                if header + nbytes != info.file_size:
                    raise ValueError(
                        f"array {key!r}: its header declares shape {shape} {dtype} "
                        f"({nbytes:,} bytes) but the archive member holds "
                        f"{info.file_size - header:,} bytes"
                    )
                total += nbytes
                if total > max_bytes:
                    raise ValueError(
                        f"its arrays need more than {max_bytes:,} bytes (array {key!r} is "
                        f"{shape} {dtype}); refusing to load it (raise max_bytes if it is trusted)"
                    )
                found[key] = (info, (tuple(shape), dtype))
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(
            f"cannot load {path}: not a valid .npz archive of plain arrays "
            f"(object/pickled arrays are refused): {exc}"
        ) from exc
    return found


def npz_info(path: PathLike, max_bytes: int = MAX_LOAD_BYTES) -> dict[str, ArrayInfo]:
    """Names, shapes and dtypes of the arrays in an ``.npz``, from their headers only.

    No array data is read, so a crafted archive (a header claiming terabytes, a zip bomb)
    costs nothing; the same checks as :func:`load_npz` apply.

    Returns
    -------
    dict[str, tuple[tuple[int, ...], np.dtype]]
        ``{name: (shape, dtype)}`` in archive order.
    """
    return {key: meta for key, (_, meta) in _scan_npz(Path(path), max_bytes).items()}


def load_npz(
    path: PathLike,
    expected: Mapping[str, tuple[int, ...] | None] | None = None,
    max_bytes: int = MAX_LOAD_BYTES,
) -> dict[str, np.ndarray]:
    """Load every array of an ``.npz`` archive, refusing pickled (object) data.

    Every member's ``.npy`` header is checked before any data is read: its name, its shape
    against ``expected``, its declared size against the zip entry and the total against
    ``max_bytes``.

    Parameters
    ----------
    path : str or os.PathLike
        An archive written by :func:`save_npz` or :func:`numpy.savez`.
    expected : Mapping[str, tuple or None], optional
        The exact names the archive must hold, each with its shape (None: any shape).
    max_bytes : int
        Most bytes all arrays together may take in memory.

    Returns
    -------
    dict[str, np.ndarray]
        The arrays by name, fully read into memory.
    """
    path = Path(path)
    members = _scan_npz(path, max_bytes)
    if expected is not None:
        diff = name_mismatch(expected, members, "missing arrays", "unexpected arrays")
        if diff:
            raise ValueError(f"{path}: {diff}; nothing was read")
        for key, shape in expected.items():
            found = members[key][1][0]
            if shape is not None and found != tuple(shape):
                raise ValueError(f"{path}: array {key!r} has shape {found}, expected {shape}")
    try:
        with zipfile.ZipFile(path) as zf:
            out = {}
            for key, (info, _) in members.items():
                with zf.open(info) as member:
                    out[key] = np.lib.format.read_array(member, allow_pickle=False)
            return out
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise ValueError(f"cannot load {path}: damaged .npz archive: {exc}") from exc


def name_mismatch(expected: Any, found: Any, missing: str, unexpected: str) -> str:
    """The names ``found`` lacks and the ones it has beyond ``expected`` (iterables of names),
    as ``"missing arrays ['b'], unexpected arrays ['x']"``; only the non-empty parts, and ``""``
    when the names agree."""
    lacks = [k for k in expected if k not in found]
    beyond = [k for k in found if k not in expected]
    parts = [f"{missing} {lacks}"] if lacks else []
    parts += [f"{unexpected} {beyond}"] if beyond else []
    return ", ".join(parts)


def check_state_dict(
    params: Mapping[str, np.ndarray], state: Mapping[str, Any], strict: bool = True,
    who: str = "load_state_dict",
) -> dict[str, np.ndarray]:  # fmt: skip
    """Validate every entry of ``state`` against ``params`` and return them ready to copy.

    Nothing is changed here: callers copy the returned arrays in only after this succeeds,
    which makes loading all-or-nothing.

    Parameters
    ----------
    params : Mapping[str, np.ndarray]
        The target arrays by name (e.g. ``{name: p.data}`` of a module).
    state : Mapping[str, array_like]
        Arrays to load; each must have its parameter's shape and a real numeric dtype
        (bool, integer or floating; not complex, strings, structured or object).
    strict : bool
        Refuse missing and unexpected names (otherwise load only the names present).
    who : str
        Function named in error messages.

    Returns
    -------
    dict[str, np.ndarray]
        New arrays cast to each parameter's dtype, for the names present in ``state``.
    """
    if not isinstance(state, Mapping) and not hasattr(state, "keys"):
        raise TypeError(
            f"{who}: state must be a mapping of name -> array, got {type(state).__name__}"
        )
    diff = name_mismatch(params, state, "missing parameters", "unexpected entries")
    if strict and diff:
        raise ValueError(f"{who}: {diff}")
    out = {}
    for name, target in params.items():
        if name not in state:
            continue
        value = state[name]
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{who}: entry {name!r} is not an array ({exc})") from None
        if arr.dtype.kind not in "biuf":
            raise ValueError(
                f"{who}: entry {name!r} has dtype {arr.dtype}; a real numeric array is needed"
            )
        if arr.shape != target.shape:
            raise ValueError(
                f"{who}: {name} has shape {arr.shape} in the state, but the parameter has "
                f"shape {target.shape}"
            )
        with np.errstate(over="ignore", invalid="ignore"):
            cast = arr.astype(target.dtype)
        if np.isfinite(arr).all() and not np.isfinite(cast).all():
            raise ValueError(
                f"{who}: entry {name!r} ({arr.dtype}) overflows the parameter's {target.dtype}"
            )
        if target.dtype.kind in "biu" and not np.array_equal(cast, arr):
            raise ValueError(
                f"{who}: entry {name!r} ({arr.dtype}) has values the parameter's "
                f"{target.dtype} cannot hold (NaN, infinite, fractional or out of range)"
            )
        out[name] = cast
    return out


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
    check_readable_file(path, "IDX file")
    return parse_idx(read_maybe_gzip(path), path).copy()
