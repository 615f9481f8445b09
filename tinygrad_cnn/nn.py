"""Modules: parameters found from attributes, layers, and the book's ``SimpleConvNet``.

Layers hold parameters and call ops from ``functional``; no layer has a hand-written backward.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from . import functional as F
from .autograd import module_scope, no_grad
from .ops.conv import conv_output_size, pair
from .tensor import Tensor

InitSpec = float | str


class Parameter(Tensor):
    """A Tensor that a Module owns and an optimizer updates; always requires grad."""

    __slots__ = ()

    def __init__(self, data: Any, name: str | None = None) -> None:
        super().__init__(data, requires_grad=True, name=name)


def init_std(spec: InitSpec, fan_in: int) -> float:
    """Weight std from the book's ``weight_init_std`` convention.

    A number is used as is (the book's 0.01); ``'relu'``/``'he'`` give He's ``sqrt(2/fan_in)``;
    ``'sigmoid'``/``'xavier'`` give Xavier's ``sqrt(1/fan_in)``.
    """
    if isinstance(spec, str):
        key = spec.lower()
        if key in ("relu", "he"):
            return float(np.sqrt(2.0 / fan_in))
        if key in ("sigmoid", "xavier"):
            return float(np.sqrt(1.0 / fan_in))
        raise ValueError(f"init: unknown weight_init_std {spec!r}; use a number, 'he' or 'xavier'")
    if not spec > 0:
        raise ValueError(f"init: weight_init_std must be positive, got {spec}")
    return float(spec)


class Module:
    """Base class. Parameters and sub-modules assigned as attributes are registered in order."""

    def __init__(self) -> None:
        object.__setattr__(self, "_params", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_scope_name", type(self).__name__)

    def __setattr__(self, key: str, value: Any) -> None:
        if "_params" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}: call super().__init__() first")
        if isinstance(value, Parameter):
            self._params[key] = value
            value.name = key
        elif isinstance(value, Module):
            self._modules[key] = value
            value._scope_name = key
            for name, p in value.named_parameters():
                p.name = f"{key}.{name}"
        object.__setattr__(self, key, value)

    # ---------------------------------------------------------------- parameters
    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        for name, p in self._params.items():
            yield prefix + name, p
        for name, m in self._modules.items():
            yield from m.named_parameters(prefix + name + ".")

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        yield prefix.rstrip("."), self
        for name, m in self._modules.items():
            yield from m.named_modules(prefix + name + ".")

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def train(self, mode: bool = True) -> Module:
        for _, m in self.named_modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every parameter's array, by dotted name."""
        return {name: p.data.copy() for name, p in self.named_parameters()}

    def load_state_dict(self, state: dict[str, np.ndarray], strict: bool = True) -> None:
        """Copy arrays into the parameters in place (cast to each parameter's dtype).

        A missing, extra (when ``strict``) or mis-shaped entry raises ``ValueError`` naming it;
        nothing is changed unless every entry fits.
        """
        params = dict(self.named_parameters())
        missing = [k for k in params if k not in state]
        extra = [k for k in state if k not in params]
        if strict and (missing or extra):
            raise ValueError(
                f"load_state_dict: missing parameters {missing}, unexpected entries {extra}"
            )
        for name, p in params.items():
            if name in state and np.shape(state[name]) != p.shape:
                raise ValueError(
                    f"load_state_dict: {name} has shape {np.shape(state[name])} in the state, "
                    f"but the parameter has shape {p.shape}"
                )
        for name, p in params.items():
            if name in state:
                np.copyto(p.data, state[name], casting="unsafe")

    # ---------------------------------------------------------------- calling
    def forward(self, *args: Any) -> Tensor:
        raise NotImplementedError

    def __call__(self, *args: Any) -> Tensor:
        with module_scope(self._scope_name):
            return self.forward(*args)

    def plot(self, x: Any, path: str, t: Any = None, **kwargs: Any) -> Any:
        """Render the graph of this module's output (or of ``loss(x, t)``) to ``path``."""
        from .viz import plot_module

        return plot_module(self, x, path, t, **kwargs)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"  ({k}): " + repr(m).replace("\n", "\n  ") for k, m in self._modules.items()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        return head + ("\n" + "\n".join(lines) + "\n)" if lines else ")")


def _rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


class Linear(Module):
    """Affine layer ``x @ weight + bias``: (N, IN) -> (N, OUT); weight (IN, OUT) as in the book."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        init: InitSpec = "he",
        rng: int | np.random.Generator | None = None,
        dtype: Any = np.float32,
    ) -> None:
        super().__init__()
        std = init_std(init, in_features)
        w = std * _rng(rng).standard_normal((in_features, out_features))
        self.weight = Parameter(w.astype(dtype))
        self.bias = Parameter(np.zeros(out_features, dtype)) if bias else None
        self.in_features, self.out_features = in_features, out_features

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}"


class Conv2d(Module):
    """Convolution layer: (N, C, H, W) -> (N, OC, OH, OW); weight (OC, C, KH, KW)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        bias: bool = True,
        init: InitSpec = "he",
        rng: int | np.random.Generator | None = None,
        dtype: Any = np.float32,
    ) -> None:
        super().__init__()
        KH, KW = pair(kernel_size, "Conv2d", "kernel_size")
        std = init_std(init, in_channels * KH * KW)
        w = std * _rng(rng).standard_normal((out_channels, in_channels, KH, KW))
        self.weight = Parameter(w.astype(dtype))
        self.bias = Parameter(np.zeros(out_channels, dtype)) if bias else None
        self.stride, self.padding = stride, padding

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)

    def extra_repr(self) -> str:
        oc, c, kh, kw = self.weight.shape
        return f"{c}, {oc}, kernel_size=({kh}, {kw}), stride={self.stride}, padding={self.padding}"


class MaxPool2d(Module):
    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)


class AvgPool2d(MaxPool2d):
    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding)


class ReLU(Module):
    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x)


class Sigmoid(Module):
    def forward(self, x: Tensor) -> Tensor:
        return F.sigmoid(x)


class Flatten(Module):
    def __init__(self, start_dim: int = 1) -> None:
        super().__init__()
        self.start_dim = start_dim

    def forward(self, x: Tensor) -> Tensor:
        return F.flatten(x, self.start_dim)


class Dropout(Module):
    """Inverted dropout: zeroes a fraction ``p`` in training and scales the rest by 1/(1-p)."""

    def __init__(self, p: float = 0.5, rng: int | np.random.Generator | None = None) -> None:
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p, self.rng = p, _rng(rng)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        keep = self.rng.random(x.shape) >= self.p
        return F.mul(x, Tensor(keep.astype(x.dtype) / x.dtype.type(1 - self.p)))


class Sequential(Module):
    """Modules applied in order; their names are "0", "1", ..."""

    def __init__(self, *modules: Module) -> None:
        super().__init__()
        for i, m in enumerate(modules):
            setattr(self, str(i), m)

    def forward(self, x: Tensor) -> Tensor:
        for m in self._modules.values():
            x = m(x)
        return x

    def __getitem__(self, i: int) -> Module:
        return list(self._modules.values())[i]

    def __len__(self) -> int:
        return len(self._modules)


def _as_labels(t: Any) -> np.ndarray:
    t = t.data if isinstance(t, Tensor) else np.asarray(t)
    return t.argmax(axis=1) if t.ndim == 2 else t


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
        x = x if isinstance(x, Tensor) else Tensor(np.asarray(x))
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
        """Fraction of correct predictions over every sample (the last short batch counts)."""
        x = x.data if isinstance(x, Tensor) else np.asarray(x)
        labels = _as_labels(t)
        if len(x) != len(labels):
            raise ValueError(f"accuracy: {len(x)} images but {len(labels)} labels")
        if len(x) == 0:
            raise ValueError("accuracy: no samples")
        correct = 0
        was_training = self.training
        self.eval()
        with no_grad():
            for i in range(0, len(x), batch_size):
                logits = self.predict(x[i : i + batch_size]).data
                correct += int((logits.argmax(axis=1) == labels[i : i + batch_size]).sum())
        self.train(was_training)
        return correct / len(x)

    def gradient(self, x: Any, t: Any) -> dict[str, np.ndarray]:
        """Gradients of the loss by parameter name (``conv1.weight``, ...)."""
        self.zero_grad()
        self.loss(x, t).backward()
        return {name: p.grad for name, p in self.named_parameters()}

    def save_params(self, path: str) -> None:
        """Write the parameters to an ``.npz`` file atomically."""
        from .io import save_npz

        save_npz(path, self.state_dict())

    def load_params(self, path: str) -> None:
        """Load parameters from our ``.npz`` or from the book's ``params.pkl`` (W1 ... b3)."""
        from .io import load_book_pickle, load_npz

        if str(path).endswith(".pkl"):
            book = load_book_pickle(path)
            names = [name for name, _ in self.named_parameters()]
            keys = ["W1", "b1", "W2", "b2", "W3", "b3"]
            if sorted(book) != sorted(keys):
                raise ValueError(f"load_params: {path} has keys {sorted(book)}, expected {keys}")
            state = {name: book[key] for name, key in zip(names, keys, strict=True)}
        else:
            state = load_npz(path)
        self.load_state_dict(state)
