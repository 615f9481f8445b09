"""``im2col`` / ``col2im`` in the book's layout, on the same unfold/fold that ``Conv2d`` runs.

They accept our signature ``(kernel_size, stride=1, padding=0)`` and the book's
``(filter_h, filter_w, stride=1, pad=0)``; a call that would mean different things in the two
(``im2col(x, 5, 5)``: a 5x5 window with stride 5 here, a 5x5 window with stride 1 in the book)
is refused instead of silently giving a different result.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import conv as _conv  # unfold and fold through the module: the one implementation
from .conv import Pair, check_geometry, pad2d, pair
from .shape import is_int

_OURS = ("kernel_size", "stride", "padding")
_BOOKS = ("filter_h", "filter_w", "stride", "pad")


def window_args(op: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Pair, Pair, Pair]:
    """(kernel, stride, padding) of an ``im2col``/``col2im`` call, in our form
    ``(kernel_size, stride=1, padding=0)`` or the book's ``(filter_h, filter_w, stride=1, pad=0)``.

    Four positional values, the keywords ``filter_h``/``filter_w``/``pad``, or two positional
    values with ``stride=`` (``im2col(x, 5, 5, stride=1)``: our form would get ``stride``
    twice) are the book's; one positional value, a pair, or ``kernel_size``/``padding`` are
    ours. Two or three plain ints alone (``im2col(x, 5, 5)``) mean different things in the two
    and are refused.
    """
    unknown = sorted(set(kwargs) - {*_OURS, *_BOOKS})
    if unknown:
        raise TypeError(f"{op}: unexpected keyword argument(s) {unknown}")
    book_kw = bool({"filter_h", "filter_w", "pad"} & set(kwargs))
    ours_kw = bool({"kernel_size", "padding"} & set(kwargs))
    if book_kw and ours_kw:
        raise TypeError(
            f"{op}: mixes the book's keywords (filter_h, filter_w, pad) with ours "
            "(kernel_size, padding)"
        )
    if len(args) > 4:
        raise TypeError(f"{op}: takes at most 4 window arguments, got {len(args)}: {args}")
    plain = bool(args) and not isinstance(args[0], tuple | list)
    book = book_kw or len(args) == 4 or (plain and len(args) == 2 and "stride" in kwargs)
    if not (book or ours_kw) and len(args) in (2, 3) and plain:
        lead = "x" if op == "im2col" else "col, input_shape"
        raise TypeError(
            f"{op}: ambiguous call {op}({lead}, {', '.join(map(str, args))}): the book's "
            f"signature is {op}({lead}, filter_h, filter_w, stride=1, pad=0), ours is "
            f"{op}({lead}, kernel_size, stride=1, padding=0); pass all four as the book does "
            f"({op}({lead}, FH, FW, stride, pad)), give stride by keyword "
            f"({op}({lead}, FH, FW, stride=1)) or name them (filter_h=5, filter_w=5 or "
            "kernel_size=5)"
        )
    names = _BOOKS if book else _OURS
    given = dict(zip(names, args, strict=False))  # fewer args than names is fine
    twice = sorted(set(given) & set(kwargs))
    if twice:
        raise TypeError(f"{op}: got multiple values for {twice}")
    given.update(kwargs)
    if book:
        missing = [n for n in ("filter_h", "filter_w") if n not in given]
        if missing:
            raise TypeError(f"{op}: the book's form needs filter_h and filter_w; missing {missing}")
        kernel = pair((given["filter_h"], given["filter_w"]), op, "filter_h, filter_w")
        return (
            kernel,
            pair(given.get("stride", 1), op, "stride"),
            pair(given.get("pad", 0), op, "pad"),
        )
    if "kernel_size" not in given:
        raise TypeError(f"{op}: missing kernel_size (or the book's filter_h, filter_w)")
    return (
        pair(given["kernel_size"], op, "kernel_size"),
        pair(given.get("stride", 1), op, "stride"),
        pair(given.get("padding", 0), op, "padding"),
    )


def im2col(x: np.ndarray, *args: Any, **kwargs: Any) -> np.ndarray:
    """Unfold image patches into rows of a matrix (the book's layout), with ``unfold``.

    Called as ``im2col(x, kernel_size, stride=1, padding=0)`` or, as in the book,
    ``im2col(x, filter_h, filter_w, stride, pad)`` (see ``window_args``).

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    kernel_size, stride, padding : int or (h, w) pair

    Returns
    -------
    col : ndarray, shape (N*OH*OW, C*KH*KW)
        Row ``(n, oh, ow)`` holds the window at output position (oh, ow) of image n,
        flattened in (c, kh, kw) order, so ``col @ w.reshape(OC, -1).T`` is a convolution.

    Examples
    --------
    >>> im2col(np.zeros((2, 1, 28, 28)), 5).shape
    (1152, 25)
    """
    kernel, stride_, padding_ = window_args("im2col", args, kwargs)
    x = np.asarray(x)
    OH, OW = check_geometry("im2col", x.shape, kernel, stride_, padding_)
    (N, C), (KH, KW) = x.shape[:2], kernel
    xp = pad2d(x, padding_).transpose(1, 2, 3, 0)  # (N, C, Hp, Wp) -> (C, Hp, Wp, N)
    cols = _conv.unfold(xp, kernel, stride_, (OH, OW))  # (C, KH, KW, OH, OW, N)
    # (C, KH, KW, OH, OW, N) -> (N, OH, OW, C, KH, KW) -> (N*OH*OW, C*KH*KW): the one copy
    return cols.transpose(5, 3, 4, 0, 1, 2).reshape(N * OH * OW, C * KH * KW)


def col2im(col: np.ndarray, x_shape: tuple[int, ...], *args: Any, **kwargs: Any) -> np.ndarray:
    """Adjoint of ``im2col`` (``fold_into``): sum rows (N*OH*OW, C*KH*KW) into (N, C, H, W).

    Window arguments as ``im2col``'s: ``(kernel_size, stride=1, padding=0)`` or the book's
    ``(filter_h, filter_w, stride=1, pad=0)``.

    Overlapping windows add up, so ``<im2col(x), c> == <x, col2im(c, x.shape, ...)>``.

    Examples
    --------
    >>> col2im(np.ones((1152, 25)), (2, 1, 28, 28), 5).shape
    (2, 1, 28, 28)
    """
    kernel, stride_, padding_ = window_args("col2im", args, kwargs)
    if not isinstance(x_shape, tuple | list) or not all(is_int(d) for d in x_shape):
        raise TypeError(f"col2im: x_shape must be a tuple of ints (N, C, H, W), got {x_shape!r}")
    x_shape, col = tuple(int(d) for d in x_shape), np.asarray(col)
    OH, OW = check_geometry("col2im", x_shape, kernel, stride_, padding_)
    (N, C), (KH, KW) = x_shape[:2], kernel
    expected = (N * OH * OW, C * KH * KW)
    if col.shape != expected:
        raise ValueError(f"col2im: col has shape {col.shape}, expected {expected} for {x_shape}")
    # (N*OH*OW, C*KH*KW) -> (N, OH, OW, C, KH, KW) -> (N, C, OH, OW, KH, KW)
    g6 = col.reshape(N, OH, OW, C, KH, KW).transpose(0, 3, 1, 2, 4, 5)
    return _conv.fold(g6, x_shape, kernel, stride_, padding_)
