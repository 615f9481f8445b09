"""The book's networks, composed from ``nn`` layers (no hand-written backward anywhere)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from . import functional as F
from .nn import Conv2d, Flatten, InitSpec, Linear, MaxPool2d, Module, ReLU, _rng, predict_classes
from .ops.conv import conv_output_size
from .tensor import Tensor


def _as_labels(t: Any) -> np.ndarray:
    t = t.data if isinstance(t, Tensor) else np.asarray(t)
    return t.argmax(axis=1) if t.ndim == 2 else t


def _check_path(who: str, path: Any) -> str | os.PathLike:
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"{who}: path must be a str or os.PathLike, got {type(path).__name__}")
    return path


def accuracy(net: Module, x: Any, t: Any, batch_size: int = 500) -> float:
    """Fraction of the images ``x`` (N, C, H, W) whose predicted class is the label.

    The one accuracy of the package (``SimpleConvNet.accuracy``, ``Trainer`` and the CLI
    use it). ``t`` holds integer labels (N,) or one-hot rows (N, K); every sample counts,
    the last short batch too. Runs in eval mode without a graph (see ``predict_classes``).
    """
    x = x.data if isinstance(x, Tensor) else np.asarray(x)
    labels = _as_labels(t)
    if labels.ndim != 1 or len(x) != len(labels):
        raise ValueError(
            f"accuracy: {len(x)} images but labels of shape {labels.shape}; need (N,) or (N, K)"
        )
    if len(x) == 0:
        raise ValueError("accuracy: no samples")
    return float(np.mean(predict_classes(net, x, batch_size) == labels))


class SimpleConvNet(Module):
    """The book's network: conv - relu - pool - affine - relu - affine (- softmax in the loss).

    Parameters
    ----------
    input_dim : (C, H, W)
    conv_param : dict with ``filter_num``, ``filter_size``, ``pad``, ``stride``
    hidden_size, output_size : int
    weight_init_std : float or str
        0.01 as in the book, or 'he'/'relu', 'xavier'/'sigmoid' (per layer fan-in).
    seed : int or Generator, optional
        Makes the initial weights reproducible.
    """

    def __init__(
        self,
        input_dim: tuple[int, int, int] = (1, 28, 28),
        conv_param: dict[str, int] | None = None,
        hidden_size: int = 100,
        output_size: int = 10,
        weight_init_std: InitSpec = 0.01,
        seed: int | np.random.Generator | None = None,
        dtype: Any = np.float32,
    ) -> None:
        super().__init__()
        cp = {"filter_num": 30, "filter_size": 5, "pad": 0, "stride": 1, **(conv_param or {})}
        C, H, W = input_dim
        fn, fs, pad, stride = cp["filter_num"], cp["filter_size"], cp["pad"], cp["stride"]
        oh, ow = conv_output_size(H, fs, stride, pad), conv_output_size(W, fs, stride, pad)
        ph, pw = conv_output_size(oh, 2, 2, 0), conv_output_size(ow, 2, 2, 0)
        if min(oh, ow, ph, pw) < 1:
            raise ValueError(
                f"SimpleConvNet: input {input_dim} is too small for a {fs}x{fs} filter "
                "followed by 2x2 pooling"
            )
        rng = _rng(seed)
        std = weight_init_std
        self.conv1 = Conv2d(C, fn, fs, stride, pad, init=std, rng=rng, dtype=dtype)
        self.relu1 = ReLU()
        self.pool1 = MaxPool2d(2, 2)
        self.flatten = Flatten()
        self.fc1 = Linear(fn * ph * pw, hidden_size, init=std, rng=rng, dtype=dtype)
        self.relu2 = ReLU()
        self.fc2 = Linear(hidden_size, output_size, init=std, rng=rng, dtype=dtype)
        self.input_dim = tuple(input_dim)

    def forward(self, x: Any) -> Tensor:
        """Logits (N, output_size). Image arrays are cast to the parameters' dtype (float32)."""
        if not isinstance(x, Tensor):
            x = Tensor(np.asarray(x).astype(self.conv1.weight.dtype, copy=False))
        x = self.pool1(self.relu1(self.conv1(x)))
        return self.fc2(self.relu2(self.fc1(self.flatten(x))))

    def predict(self, x: Any) -> Tensor:
        """Logits (N, output_size) for images (N, C, H, W)."""
        return self(x)

    def loss(self, x: Any, t: Any) -> Tensor:
        """Mean softmax cross-entropy; ``t`` integer labels (N,) or one-hot (N, K)."""
        t = t if isinstance(t, Tensor) else Tensor(np.asarray(t))
        return F.softmax_cross_entropy(self.predict(x), t)

    def accuracy(self, x: Any, t: Any, batch_size: int = 100) -> float:
        """Fraction of correct predictions over every sample (see :func:`accuracy`)."""
        return accuracy(self, x, t, batch_size)

    def gradient(self, x: Any, t: Any) -> dict[str, np.ndarray]:
        """Gradients of the loss by parameter name (``conv1.weight``, ...)."""
        self.zero_grad()
        self.loss(x, t).backward()
        return {name: p.grad for name, p in self.named_parameters()}

    def save_params(self, path: str | os.PathLike, book: bool = False) -> None:
        """Write the parameters atomically, under exactly this name.

        Any name works (the book's ``params.pkl`` too): ``load_params`` tells the format
        from the file's first bytes, not from its suffix. The default is an ``.npz`` archive;
        ``book=True`` writes the book's own format instead, a pickled dict ``W1 ... b3`` of
        arrays that the book's ``SimpleConvNet.load_params`` reads.
        """
        from .io import atomic_write, save_npz

        path = _check_path("save_params", path)
        if not book:
            save_npz(path, self.state_dict())
            return
        import pickle

        with atomic_write(path) as f:
            pickle.dump(self.book_params(), f, protocol=4)

    def book_params(self) -> dict[str, np.ndarray]:
        """The parameters under the book's names and layouts, as copies: ``W1`` (FN, C, FH,
        FW), ``b1`` (FN,), ``W2`` (FN*OH*OW, hidden), ``b2``, ``W3`` (hidden, out), ``b3`` (the
        book's ``network.params``; copy them into its arrays to use our trained weights)."""
        names = ["W1", "b1", "W2", "b2", "W3", "b3"]
        return {
            k: p.numpy().copy() for k, (_, p) in zip(names, self.named_parameters(), strict=True)
        }

    def load_params(self, path: str | os.PathLike) -> None:
        """Load parameters from our ``.npz`` or from the book's pickle (W1 ... b3), any name.

        The format comes from the content: a zip archive (``PK``) is read as ``.npz`` with
        ``allow_pickle=False``; a pickle (protocol 0-5) goes through an unpickler that builds
        nothing but arrays. All or nothing: every entry's name, shape and dtype is checked
        (for an ``.npz`` from the headers, before any data is read) before any parameter
        changes.
        """
        from .io import check_state_dict, load_npz
        from .picklesafe import load_book_pickle

        path = _check_path("load_params", path)
        params = {name: p.data for name, p in self.named_parameters()}
        kind = _file_format(path)
        if kind == "pickle":
            book = load_book_pickle(path)
            keys = ["W1", "b1", "W2", "b2", "W3", "b3"]
            if sorted(book) != sorted(keys):
                raise ValueError(f"load_params: {path} has keys {sorted(book)}, expected {keys}")
            state = {name: book[key] for name, key in zip(params, keys, strict=True)}
        else:
            state = load_npz(path, expected={name: a.shape for name, a in params.items()})
        checked = check_state_dict(params, state, who=f"load_params({path})")
        self.load_state_dict(checked)


#: First bytes of a pickle: PROTO (0x80) for protocols 2-5, a MARK or an empty dict/list
#: opcode for protocols 0 and 1. Anything else is read as an ``.npz`` (a zip archive, ``PK``),
#: whose loader names what else the file is (a single ``.npy``, an empty file...).
_PICKLE_STARTS = (b"\x80", b"(", b"}", b"]")


def _file_format(path: str | os.PathLike) -> str:
    """``"pickle"`` or ``"npz"``, from the first byte of ``path``, whatever its name."""
    from .io import check_readable_file

    check_readable_file(Path(path))
    with open(path, "rb") as f:
        head = f.read(1)
    return "pickle" if head in _PICKLE_STARTS else "npz"
