"""The book's networks, composed from ``nn`` layers (no hand-written backward anywhere)."""

from __future__ import annotations

import os
import warnings
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from . import functional as F
from .layers import BatchNorm1d, BatchNorm2d
from .nn import (
    Conv2d,
    Dropout,
    Flatten,
    InitSpec,
    Linear,
    MaxPool2d,
    Module,
    ReLU,
    _rng,
    init_std,
    predict_classes,
)
from .ops.conv import conv_output_size
from .tensor import Tensor


def check_labels(who: str, t: Any, n: int, k: int | None) -> np.ndarray:
    """``t`` as an array after checking it as the loss does: integer labels (N,) in [0, K) or
    one-hot rows (N, K), for ``n`` samples and ``k`` classes (not checked when None)."""
    t = t.numpy() if isinstance(t, Tensor) else np.asarray(t)
    classes = f"{k} classes" if k is not None else "K classes"
    if t.ndim == 1 and t.dtype.kind not in "iu":
        raise ValueError(f"{who}: 1-D labels must be integers, got dtype {t.dtype}")
    if t.ndim in (1, 2) and len(t) != n:
        raise ValueError(
            f"{who}: {n} images but labels of shape {t.shape}; need (N,) or (N, {k or 'K'})"
        )
    if t.ndim == 1 and k is not None and len(t) and (t.min() < 0 or t.max() >= k):
        raise ValueError(
            f"{who}: labels must lie in [0, {k}) for {classes}, got values in "
            f"[{t.min()}, {t.max()}]"
        )
    one_hot = t.ndim == 2 and t.shape[1] > 1 and (k is None or t.shape[1] == k)
    if t.ndim != 1 and not one_hot:
        hint = "; flatten (N, 1) labels with t.ravel()" if t.shape[1:] == (1,) else ""
        raise ValueError(
            f"{who}: labels must be (N,) integers or one-hot (N, {k or 'K'}) for {n} images "
            f"and {classes}, got shape {t.shape}{hint}"
        )
    return t


def _check_path(who: str, path: Any) -> str | os.PathLike:
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"{who}: path must be a str or os.PathLike, got {type(path).__name__}")
    return path


def accuracy(net: Module, x: Any, t: Any, batch_size: int = 500, who: str = "accuracy") -> float:
    """Fraction of the images ``x`` (N, C, H, W) whose predicted class is the label.

    The one accuracy of the package (``SimpleConvNet.accuracy``, ``Trainer`` and the CLI
    use it). ``t`` holds integer labels (N,) or one-hot rows (N, K), checked as the loss
    checks them (K is ``net.output_size`` when the network has one); every sample counts,
    the last short batch too. Runs in eval mode without a graph (see ``predict_classes``).
    """
    x = x.numpy() if isinstance(x, Tensor) else np.asarray(x)
    if x.ndim == 0:
        raise ValueError(f"{who}: images must be an array (N, ...), got a scalar")
    labels = check_labels(who, t, len(x), getattr(net, "output_size", None))
    labels = labels.argmax(axis=1) if labels.ndim == 2 else labels
    if len(x) == 0:
        raise ValueError(f"{who}: no samples")
    return float(np.mean(predict_classes(net, x, batch_size) == labels))


#: More loss Tensors than this alive with their graphs: ``BookNetwork.loss`` warns once.
_MAX_HELD_LOSSES = 8
#: Per network, weak references to its loss Tensors that may still hold a graph (None once
#: it has warned). Kept outside the network so copying or pickling it is unaffected.
_HELD_LOSSES: weakref.WeakKeyDictionary[Module, list[weakref.ref[Tensor]] | None] = (
    weakref.WeakKeyDictionary()
)


def _holds_graph(t: Tensor) -> bool:
    """True while ``t``'s graph is alive: backward frees it (``op.freed``) unless retained."""
    return t.op is not None and not t.op.freed


@contextmanager
def _mode(net: Module, training: bool) -> Iterator[None]:
    """Run with every sub-module in ``training`` mode, then give each its own mode back."""
    modes = [(m, m.training) for _, m in net.named_modules()]
    net.train(training)
    try:
        yield
    finally:
        for m, mode in modes:
            object.__setattr__(m, "training", mode)


class BookNetwork(Module):
    """What the book's networks share: ``loss``, ``accuracy``, ``gradient``, ``params`` and
    their parameter files.

    A subclass sets ``output_size``, lists the book's parameter names in ``BOOK_KEYS``, in the
    order of ``named_parameters()``, and overrides ``book_params`` / ``_from_book`` when a
    layout differs from ours.
    """

    BOOK_KEYS: tuple[str, ...] = ()
    output_size: int

    def loss(self, x: Any, t: Any) -> Tensor:
        """Mean softmax cross-entropy of the logits ``self(x)`` (N, K) against ``t``: integer
        labels (N,) in [0, K) or one-hot rows (N, K). Dropout follows the module's mode: on in
        training mode, the default (the book's ``loss`` uses ``train_flg=True``); ``eval()``
        turns it off.

        Returns a one-element Tensor that holds the whole forward graph (about 150 MB for a
        DeepConvNet batch of 100) until ``backward()`` frees it. To keep a record, store a
        number, as the book's Trainer does: ``train_loss_list.append(float(loss))`` (or
        ``loss.item()``); ``f"{loss:.4f}"`` prints one. More than 8 stored loss Tensors that
        still hold their graph give one warning per network.
        """
        y = self(x)
        checked = check_labels(f"{type(self).__name__}.loss", t, y.shape[0], y.shape[-1])
        return self._watch(F.softmax_cross_entropy(y, t if isinstance(t, Tensor) else checked))

    def _watch(self, loss: Tensor) -> Tensor:
        """Keep a weak reference to ``loss``; warn once when too many graphs are kept alive."""
        if loss.op is None:  # no_grad or eval without a graph: nothing is held
            return loss
        held = _HELD_LOSSES.get(self, [])
        if held is None:  # warned already
            return loss
        held = [r for r in held if (kept := r()) is not None and _holds_graph(kept)]
        held.append(weakref.ref(loss))
        if len(held) <= _MAX_HELD_LOSSES:
            _HELD_LOSSES[self] = held
            return loss
        _HELD_LOSSES[self] = None
        warnings.warn(
            f"{type(self).__name__}.loss: {len(held)} loss Tensors are alive that still hold "
            "their whole forward graph (backward() was never called on them), and each keeps "
            "its activations in memory. To record the loss, store a number as the book's "
            "Trainer does: train_loss_list.append(float(loss)) (or loss.item()). "
            "(Warned once per network.)",
            UserWarning,
            stacklevel=_user_stacklevel(),
        )
        return loss

    def accuracy(self, x: Any, t: Any, batch_size: int = 100) -> float:
        """Fraction of correct predictions over every sample (see :func:`accuracy`); ``t`` is
        checked as ``loss`` checks it."""
        return accuracy(self, x, t, batch_size, who=f"{type(self).__name__}.accuracy")

    def gradient(self, x: Any, t: Any) -> dict[str, np.ndarray]:
        """Gradients of ``loss(x, t)``: a dict of new arrays, keyed by parameter name
        (``conv1.weight``, ...; the keys of ``params``).

        Zeroes and then sets ``.grad`` of every parameter (one backward), so an optimizer of
        ours can step after it too; the dict's arrays are copies that a later ``gradient``
        or ``backward`` leaves as they are.
        """
        self.zero_grad()
        self.loss(x, t).backward()
        return {
            name: np.zeros_like(p.numpy()) if p.grad is None else np.array(p.grad, copy=True)
            for name, p in self.named_parameters()
        }

    @property
    def params(self) -> dict[str, np.ndarray]:
        """The book's ``network.params``: each parameter's array by name (the keys of
        ``gradient``), the parameters' own memory, so the book's optimizers update the
        network in place (``params[key] -= lr * grads[key]``)."""
        book = dict(zip(self.BOOK_KEYS, (n for n, _ in self.named_parameters()), strict=False))
        return _ParamsDict({name: p.data for name, p in self.named_parameters()}, book)

    def save_params(self, path: str | os.PathLike, book: bool | None = None) -> None:
        """Write the parameters atomically, under exactly this name.

        ``book=None`` (the default) picks the format by the name: a ``.pkl`` name gets the
        book's own format, as its ``network.save_params("params.pkl")`` writes it (a pickled
        dict of arrays under ``BOOK_KEYS``, ``W1 ... b3``, that the book's ``load_params``
        reads); any other name gets our ``.npz`` archive, which also holds BatchNorm's running
        statistics. ``book=True`` or ``False`` forces one. ``load_params`` reads both under
        any name (it looks at the content). A ``batch_norm=True`` network has no book format:
        a ``.pkl`` name raises ``ValueError``.
        """
        from .io import atomic_write, save_npz

        path = _check_path("save_params", path)
        if book is None:
            book = Path(path).suffix.lower() == ".pkl"
            if book and len(list(self.named_parameters())) != len(self.BOOK_KEYS):
                raise ValueError(
                    f"save_params: {path}: a .pkl name writes the book's pickle, which has no "
                    f"place for this {type(self).__name__}'s extra layers (batch_norm=True?); "
                    f"save under an .npz name, e.g. {Path(path).with_suffix('.npz').name}"
                )
        if not book:
            save_npz(path, self.state_dict())
            return
        import pickle

        params = self.book_params()
        with atomic_write(path) as f:
            pickle.dump(params, f, protocol=4)

    def book_params(self) -> dict[str, np.ndarray]:
        """The parameters under the book's names and layouts, as copies (the book's
        ``network.params``; copy them into its arrays to use our trained weights)."""
        self._check_book_layout("book_params")
        pairs = zip(self.BOOK_KEYS, self.named_parameters(), strict=True)
        return {k: p.numpy().copy() for k, (_, p) in pairs}

    def _check_book_layout(self, who: str) -> None:
        n = len(list(self.named_parameters()))
        if n != len(self.BOOK_KEYS):
            raise ValueError(
                f"{who}: this {type(self).__name__} has {n} parameters, the book's has "
                f"{len(self.BOOK_KEYS)} ({', '.join(self.BOOK_KEYS)}): it has layers the book's "
                "does not (batch_norm=True?), so use our .npz files"
            )

    def _from_book(self, book: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The book's arrays (keys already checked) by our parameter names."""
        names = [name for name, _ in self.named_parameters()]
        return {name: book[key] for name, key in zip(names, self.BOOK_KEYS, strict=True)}

    def load_params(self, path: str | os.PathLike) -> None:
        """Load parameters from our ``.npz`` or from the book's pickle (``BOOK_KEYS``), any name.

        The format comes from the content: a zip archive (``PK``) is read as ``.npz`` with
        ``allow_pickle=False``; a pickle (protocol 0-5), or anything under a ``.pkl`` name,
        goes through an unpickler that builds nothing but arrays, and its errors use the
        book's names (``W7``, ``b8``). All or nothing: every entry's name, shape and dtype is
        checked (for an ``.npz`` from the headers, before any data is read) before any
        parameter changes.
        """
        from .io import check_state_dict, load_npz
        from .picklesafe import check_book_params, load_book_pickle

        path = _check_path("load_params", path)
        params = self.state_arrays()  # parameters and buffers (BatchNorm running stats)
        if _file_format(path) == "pickle":
            self._check_book_layout("load_params")
            try:
                book = load_book_pickle(path)
            except ValueError as e:
                raise ValueError(
                    f"load_params: {path} is not a pickle of the book's parameters ({e})"
                ) from None
            arrays = [p.numpy() for _, p in self.named_parameters()]
            targets = dict(zip(self.BOOK_KEYS, arrays, strict=True))
            book = check_book_params(book, targets, f"load_params({path})", type(self).__name__)
            state = self._from_book(book)
        else:
            try:
                state = load_npz(path, expected={name: a.shape for name, a in params.items()})
            except ValueError as e:
                hint = _file_hint(path, params)
                if "checkpoint" in hint:  # its ~100 names would only hide what it is
                    raise ValueError(f"load_params: {path} is not a params file{hint}") from None
                raise ValueError(f"{e}{hint}") from None
        checked = check_state_dict(params, state, who=f"load_params({path})")
        self.load_state_dict(checked)


class SimpleConvNet(BookNetwork):
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
        self.input_dim, self.output_size = tuple(input_dim), output_size

    BOOK_KEYS = ("W1", "b1", "W2", "b2", "W3", "b3")

    def forward(self, x: Any) -> Tensor:
        """Logits (N, output_size). Image arrays are cast to the parameters' dtype (float32)."""
        if not isinstance(x, Tensor):
            x = _as_images("SimpleConvNet", x, self.conv1.weight.dtype)
        _check_images("SimpleConvNet", x, self.input_dim, always=False)
        x = self.pool1(self.relu1(self.conv1(x)))
        return self.fc2(self.relu2(self.fc1(self.flatten(x))))

    def predict(self, x: Any) -> Tensor:
        """Logits (N, output_size) for images (N, C, H, W)."""
        return self(x)


#: First bytes of a pickle: PROTO (0x80) for protocols 2-5, a MARK or an empty dict/list
#: opcode for protocols 0 and 1. Anything else is read as an ``.npz`` (a zip archive, ``PK``),
#: whose loader names what else the file is (a single ``.npy``, an empty file...), except under
#: a ``.pkl`` name, where the pickle loader says it is not the book's parameters.
_PICKLE_STARTS = (b"\x80", b"(", b"}", b"]")


def _file_format(path: str | os.PathLike) -> str:
    """``"pickle"`` or ``"npz"``, from the first byte of ``path`` (and its ``.pkl`` suffix
    when that byte is neither)."""
    from .io import check_readable_file

    check_readable_file(Path(path))
    with open(path, "rb") as f:
        head = f.read(1)
    if head in _PICKLE_STARTS:
        return "pickle"
    return "pickle" if head != b"P" and Path(path).suffix.lower() == ".pkl" else "npz"


def _image_shape_hint(input_dim: tuple[int, ...], shape: tuple[int, ...]) -> str:
    """How to fix images of ``shape`` for ``input_dim`` (C, H, W) in the usual mix-ups (flat
    MNIST rows, a single image, no channel axis, channels last), or ``""``."""
    shape, (C, H, W) = tuple(shape), input_dim
    dims = ", ".join(map(str, input_dim))
    if len(shape) == 2 and shape[1] == C * H * W:
        return f"flat rows; use x.reshape(-1, {dims}) or load_mnist(flatten=False)"
    if shape == input_dim:
        return "a single image; add the batch axis with x[None]"
    if C == 1 and shape == (H, W):
        return "a single image; add the batch and channel axes with x[None, None]"
    if C == 1 and shape[1:] == (H, W):
        return "no channel axis; add it with x[:, None]"
    if shape[1:] == (H, W, C):
        return "channels last (N, H, W, C); use x.transpose(0, 3, 1, 2)"
    return ""


def _as_images(who: str, x: Any, dtype: np.dtype) -> Tensor:
    """Images (N, C, H, W) as a Tensor of the parameters' dtype. Integer pixels above 1 (the
    0-255 of ``load_mnist(normalize=False)``) are used as they are, with a warning: the book's
    networks and their init scales are made for floats in [0, 1]."""
    a = np.asarray(x)
    if a.dtype.kind in "ui" and a.size and a.max() > 1:
        warnings.warn(
            f"{who}: the images are integers up to {a.max()} ({a.dtype}); the book's networks "
            "expect floats in [0, 1]: load them with load_mnist(normalize=True), or pass x / 255",
            stacklevel=4,
        )
    return Tensor(a.astype(dtype, copy=False))


def _check_images(who: str, x: Tensor, input_dim: tuple[int, ...], always: bool) -> None:
    """Refuse images that are not (N, *input_dim): every such shape when ``always``, else only
    the mix-ups that have a hint (the layers' own errors name the layer for the rest)."""
    if x.ndim == 4 and tuple(x.shape[1:]) == input_dim:
        return
    hint = _image_shape_hint(input_dim, x.shape)
    if hint or always:
        dims = ", ".join(map(str, input_dim))
        raise ValueError(
            f"{who}: images must be (N, {dims}), got {x.shape}" + (f": {hint}" if hint else "")
        )


#: The book's six convolutions (ch. 8): 3x3 filters, 16, 16, 32, 32 (pad 2), 64, 64.
_DEEP_CONVS = tuple(
    {"filter_num": fn, "filter_size": 3, "pad": pad, "stride": 1}
    for fn, pad in ((16, 1), (16, 1), (32, 1), (32, 2), (64, 1), (64, 1))
)


class DeepConvNet(BookNetwork):
    """The book's deep network (ch. 8, about 99.4 % on MNIST).

    (conv - relu - conv - relu - pool) x 3 - affine - relu - dropout - affine - dropout
    (- softmax in the loss). On (N, 1, 28, 28) the maps are 28 -> 28 -> 14 -> 14 -> 16 (pad 2)
    -> 8 -> 8 -> 8 -> 4, so ``fc1`` takes 64*4*4 = 1024 features. Parameters ``conv1`` ...
    ``conv6``, ``fc1``, ``fc2`` are the book's ``W1, b1`` ... ``W8, b8``.

    Parameters
    ----------
    input_dim : (C, H, W)
    conv_param_1, ..., conv_param_6 : dict, optional
        ``filter_num``, ``filter_size``, ``pad``, ``stride`` of each conv (the book's by default).
    hidden_size, output_size : int
    weight_init_std : float or str
        'he' (the book's ``weight_init_scales``, sqrt(2 / fan-in) per layer), 'xavier' or a std.
    dropout_ratio : float
    batch_norm : bool
        Batch normalisation after every convolution and after fc1 (before the ReLUs); its
        parameters and running statistics are ``norm1`` ... ``norm7``. The book's pickle has no
        such layers, so this variant reads and writes only our ``.npz`` files.
    seed : int or Generator, optional
        Makes the initial weights and the dropout masks reproducible.

    Notes
    -----
    Our ``Dropout`` is inverted (it scales the kept units by 1/k in training, k = 1 - p); the
    book's scales by k at test time. Both compute the same function, in training and at test,
    when ``fc2`` holds ``k**2 * W8`` and ``k * b8``; ``load_params`` and ``book_params``
    convert, so the book's ``deep_convnet_params.pkl`` predicts here what it predicts there;
    ``fc2`` starts at ``k**2`` times the init scale, so ``W8`` starts as in the book.
    """

    BOOK_KEYS = tuple(f"{kind}{i}" for i in range(1, 9) for kind in ("W", "b"))

    def __init__(
        self,
        input_dim: tuple[int, int, int] = (1, 28, 28),
        conv_param_1: dict[str, int] | None = None,
        conv_param_2: dict[str, int] | None = None,
        conv_param_3: dict[str, int] | None = None,
        conv_param_4: dict[str, int] | None = None,
        conv_param_5: dict[str, int] | None = None,
        conv_param_6: dict[str, int] | None = None,
        hidden_size: int = 50,
        output_size: int = 10,
        weight_init_std: InitSpec = "he",
        dropout_ratio: float = 0.5,
        batch_norm: bool = False,
        seed: int | np.random.Generator | None = None,
        dtype: Any = np.float32,
    ) -> None:
        super().__init__()
        given = (conv_param_1, conv_param_2, conv_param_3, conv_param_4, conv_param_5,
                 conv_param_6)  # fmt: skip
        rng, init = _rng(seed), weight_init_std
        (C, H, W), layers = input_dim, []
        for i, (book, mine) in enumerate(zip(_DEEP_CONVS, given, strict=True), start=1):
            if mine is not None and not set(mine) <= set(book):
                raise ValueError(f"DeepConvNet: conv_param_{i} has unknown keys {sorted(mine)}")
            fn, fs, pad, stride = {**book, **(mine or {})}.values()
            layers.append((f"conv{i}", Conv2d(C, fn, fs, stride, pad, init=init, rng=rng,
                                              dtype=dtype)))  # fmt: skip
            layers += self._norm_layer(i, fn, batch_norm, dtype)
            layers.append((f"relu{i}", ReLU()))
            H, W, C = conv_output_size(H, fs, stride, pad), conv_output_size(W, fs, stride, pad), fn
            if i % 2 == 0:
                layers.append((f"pool{i // 2}", MaxPool2d(2, 2)))
                H, W = conv_output_size(H, 2, 2, 0), conv_output_size(W, 2, 2, 0)
            if min(H, W) < 1:
                raise ValueError(f"DeepConvNet: input {input_dim} is too small for conv{i}")
        drops = rng.spawn(2)  # the masks' own streams, after the weights
        fc2_std = init_std(init, hidden_size) * (1 - dropout_ratio) ** 2  # the book's W8 (Notes)
        layers += [("flatten", Flatten()),
                   ("fc1", Linear(C * H * W, hidden_size, init=init, rng=rng, dtype=dtype)),
                   *self._norm_layer(7, hidden_size, batch_norm, dtype),
                   ("relu7", ReLU()), ("dropout1", Dropout(dropout_ratio, drops[0])),
                   ("fc2", Linear(hidden_size, output_size, init=fc2_std, rng=rng, dtype=dtype)),
                   ("dropout2", Dropout(dropout_ratio, drops[1]))]  # fmt: skip
        for name, layer in layers:
            setattr(self, name, layer)
        self.input_dim, self.dropout_ratio = tuple(input_dim), dropout_ratio
        self.output_size = output_size

    def _norm_layer(
        self, i: int, features: int, batch_norm: bool, dtype: Any
    ) -> list[tuple[str, Module]]:
        """``norm{i}``: batch normalisation after conv i (``BatchNorm2d``, i <= 6) or after fc1
        (``BatchNorm1d``, i == 7) in the ``batch_norm=True`` variant; nothing otherwise."""
        if not batch_norm:
            return []
        norm = BatchNorm1d if i == 7 else BatchNorm2d
        return [(f"norm{i}", norm(features, dtype=dtype))]

    def forward(self, x: Any) -> Tensor:
        """Logits (N, output_size); Dropout follows the module's mode (``train()``/``eval()``)."""
        if not isinstance(x, Tensor):
            x = _as_images("DeepConvNet", x, self.conv1.weight.dtype)
        _check_images("DeepConvNet", x, self.input_dim, always=True)
        for layer in self._modules.values():
            x = layer(x)
        return x

    def predict(self, x: Any, train_flg: bool = False) -> Tensor:
        """Logits (N, output_size) for images (N, C, H, W); dropout only if ``train_flg``."""
        with _mode(self, train_flg):
            return self(x)

    def book_params(self) -> dict[str, np.ndarray]:
        k = 1 - self.dropout_ratio
        params = super().book_params()
        params["W8"] /= k * k  # undo the dropout scaling (see Notes)
        params["b8"] /= k
        return params

    def _from_book(self, book: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        k, state = 1 - self.dropout_ratio, super()._from_book(book)
        state["fc2.weight"] = state["fc2.weight"] * (k * k)
        state["fc2.bias"] = state["fc2.bias"] * k
        return state


class _ParamsDict(dict):
    """``network.params``: updated in place (``params[k] -= ...``); assigning a new array to a
    key would change only this dict, so it is refused, and the book's ``W1`` keys get a hint."""

    def __init__(self, arrays: dict[str, np.ndarray], book: dict[str, str]) -> None:
        super().__init__(arrays)
        self._book = book

    def __setitem__(self, key: str, value: Any) -> None:
        if key in self and value is dict.__getitem__(self, key):
            return  # ``params[k] -= x`` updated the array in place, then stores it back
        raise TypeError(
            f"params[{key!r}] = ... would replace the array in this dict only, not in the "
            f"network; update it in place: params[{key!r}] -= lr * grad (or [...] = new)"
        )

    def __missing__(self, key: str) -> np.ndarray:
        if key in self._book:
            raise KeyError(
                f"{key!r}: the book's name; here the parameters are named by layer: "
                f"params[{self._book[key]!r}] (see book_params() for a dict under the book's names)"
            )
        raise KeyError(key)


def _user_stacklevel() -> int:
    """``stacklevel`` for a warning that points at the first frame outside tinygrad_cnn."""
    import sys

    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith("tinygrad_cnn"):
        frame, level = frame.f_back, level + 1
    return level


def _file_hint(path: Path, params: dict[str, np.ndarray]) -> str:
    """What a params file that does not fit probably is: a checkpoint, or the other variant."""
    from .io import npz_info

    try:
        names = set(npz_info(path))
    except (OSError, ValueError):
        return ""
    if "meta" in names and any(n.startswith("param/") for n in names):
        return (
            " (this is a training checkpoint: load the params.npz next to it, or resume "
            "with Trainer.load_checkpoint / tinygrad-cnn train --resume)"
        )
    norms = any(n.startswith("norm") for n in names)
    if norms != any(n.startswith("norm") for n in params):
        return (
            " (it was saved by a network with batch_norm=True: build DeepConvNet(batch_norm=True))"
            if norms
            else " (it was saved without batch normalisation: build it with batch_norm=False)"
        )
    return ""
