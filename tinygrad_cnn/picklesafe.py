"""Load the book's ``params.pkl`` without running its code: an array-only unpickler.

The unpickler resolves only the few globals a pickled NumPy array needs, so a crafted file
cannot call ``os.system``, ``eval`` or anything else; and it charges every array against a
byte budget *before* NumPy allocates it, so a file claiming a huge array costs nothing.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import IO, Any

import numpy as np

from .io import MAX_LOAD_BYTES, PathLike, check_readable_file, check_state_dict

__all__ = ["check_book_params", "load_book_pickle"]


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """Stand-in for ``_codecs.encode``, which protocol-2 pickles use to store bytes."""
    if not isinstance(text, str) or encoding.lower().replace("-", "") != "latin1":
        raise pickle.UnpicklingError("_codecs.encode is only allowed for latin1 byte strings")
    return text.encode("latin1")


class _Budget:
    """Bytes the arrays of one unpickling may still allocate; charged before allocating."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path, self.max_bytes, self.left = path, max_bytes, max_bytes

    def charge(self, shape: Any, dtype: Any) -> None:
        try:
            dims = (int(shape),) if np.ndim(shape) == 0 else tuple(int(d) for d in shape)
            itemsize = np.dtype(dtype).itemsize
        except (TypeError, ValueError) as exc:
            raise pickle.UnpicklingError(f"bad array shape or dtype ({exc})") from None
        if any(d < 0 for d in dims):
            raise pickle.UnpicklingError(f"negative array shape {dims}")
        nbytes = math.prod(dims) * itemsize
        if nbytes > self.left:
            raise _TooBig(
                f"refusing to unpickle {self.path}: its arrays need more than "
                f"{self.max_bytes:,} bytes (one is {dims} of {itemsize}-byte items)"
            )
        self.left -= nbytes


def _allowed_globals(budget: _Budget) -> dict[tuple[str, str], Any]:
    # Arrays are built as a private ndarray subclass whose construction and __setstate__
    # charge the budget before NumPy allocates; the caller turns them into plain ndarrays.
    class Capped(np.ndarray):
        def __new__(cls, shape: Any, dtype: Any = float, *args: Any, **kwargs: Any) -> Capped:
            budget.charge(shape, dtype)
            return super().__new__(cls, shape, dtype, *args, **kwargs)

        def __setstate__(self, state: Any) -> None:
            if not isinstance(state, tuple) or len(state) not in (4, 5):
                raise pickle.UnpicklingError("bad ndarray state")
            budget.charge(state[-4], state[-3])
            super().__setstate__(state)

    def reconstruct(subtype: Any, shape: Any, dtype: Any) -> Capped:
        if subtype is not Capped:
            raise pickle.UnpicklingError("_reconstruct is only allowed for numpy.ndarray")
        return Capped(shape, dtype)

    def frombuffer(buf: Any, dtype: Any, shape: Any, order: str) -> np.ndarray:
        budget.charge(shape, dtype)
        return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order)

    allowed: dict[tuple[str, str], Any] = {("_codecs", "encode"): _latin1_encode}
    for mod in ("numpy.core", "numpy._core"):
        allowed[(f"{mod}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{mod}.numeric", "_frombuffer")] = frombuffer
    allowed[("numpy", "ndarray")] = Capped
    allowed[("numpy", "dtype")] = np.dtype
    return allowed


class _RefusedGlobal(ValueError):
    pass


class _TooBig(ValueError):
    pass


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals NumPy arrays need, within a byte budget."""

    def __init__(self, file: IO[bytes], path: Path, max_bytes: int) -> None:
        super().__init__(file, encoding="latin1")  # latin1 also reads Python 2 array pickles
        self._path = path
        self._allowed = _allowed_globals(_Budget(path, max_bytes))

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            module = "builtins" if module == "__builtin__" else module  # protocol <= 2 name
            raise _RefusedGlobal(
                f"refusing to unpickle {module}.{name} from {self._path}: "
                "only NumPy arrays and plain containers are allowed"
            ) from None


def load_book_pickle(path: PathLike, max_bytes: int = MAX_LOAD_BYTES) -> dict[str, np.ndarray]:
    """Load a *Deep Learning from Scratch* parameter pickle without running its code.

    The file (e.g. the book's ``params.pkl``) must hold a dict of name -> ndarray such
    as ``W1, b1, W2, b2, W3, b3``. Unpickling goes through a restricted loader that can
    only build NumPy arrays, dtypes and built-in containers, so a crafted file cannot
    call ``os.system``, ``eval`` or anything else, nor allocate more than ``max_bytes``
    for its arrays (checked before each allocation).

    Parameters
    ----------
    path : str or os.PathLike
        The pickle file.
    max_bytes : int
        Most bytes all arrays together may take.

    Returns
    -------
    dict[str, np.ndarray]
        The parameters by name.
    """
    path = Path(path)
    check_readable_file(path, "pickle file")
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, path, max_bytes).load()
    except (_RefusedGlobal, _TooBig) as exc:
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
    return {key: value.view(np.ndarray) for key, value in obj.items()}


def check_book_params(
    book: dict[str, np.ndarray], targets: dict[str, np.ndarray], who: str, network: str
) -> dict[str, np.ndarray]:
    """Check a loaded book pickle against a network's arrays, in the book's names.

    Parameters
    ----------
    book : dict[str, np.ndarray]
        What :func:`load_book_pickle` returned.
    targets : dict[str, np.ndarray]
        The network's parameter arrays under the book's keys (``W1, b1, ...``).
    who, network : str
        The caller and the network's class, named in error messages.

    Returns
    -------
    dict[str, np.ndarray]
        The arrays cast to the targets' dtypes, by the book's keys.
    """
    missing = [k for k in targets if k not in book]
    extra = [k for k in book if k not in targets]
    if missing or extra:
        said = [f"missing: {', '.join(missing)}"] if missing else []
        said += [f"unexpected: {', '.join(map(str, extra))}"] if extra else []
        raise ValueError(f"{who}: not the book's {network} parameters ({'; '.join(said)})")
    for key, target in targets.items():
        shape = np.shape(book[key])
        if shape != target.shape:
            raise ValueError(
                f"{who}: {key} has shape {shape} in the file, but this {network}'s {key} has "
                f"shape {target.shape} (a network built with other sizes?)"
            )
    return check_state_dict(targets, book, who=who)
