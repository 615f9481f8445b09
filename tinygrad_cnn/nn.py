"""Modules: parameters found from attributes, and the layers networks are built from.

Layers hold parameters and call ops from ``functional``; no layer has a hand-written backward.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from . import functional as F
from . import parallel
from .autograd import RemovableHandle, module_scope, no_grad
from .io import check_state_dict
from .ops.conv import pair
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
        object.__setattr__(self, "_forward_hooks", ())
        object.__setattr__(self, "_containers", {})  # dict/list/tuple attributes, by name
        object.__setattr__(self, "_buffers", {})  # saved, not trained: BatchNorm's running stats

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
        elif key in self._buffers:
            self._check_buffer(key, value)
            self._buffers[key] = value
        elif isinstance(value, dict | list | tuple):
            self._containers[key] = value
            object.__setattr__(self, key, value)
            self._sync_containers()  # a float array given here is refused right away
            return
        elif key in self._containers:
            del self._containers[key]
        object.__setattr__(self, key, value)

    def _sync_containers(self) -> None:
        """Register the Parameters and Modules held in dict/list/tuple attributes (the book's
        ``self.params = {}``, filled at any time) as ``params.W1`` / ``layers.0``. A float
        NumPy array there is refused, naming the entry: it would never be trained."""
        boxes = self._containers
        if not boxes and not self.__dict__.get("_boxed"):
            return
        boxed = self.__dict__.setdefault("_boxed", set())
        for name in [n for n in boxed if n in self._params or n in self._modules]:
            self._params.pop(name, None)  # rebuilt below: entries may have changed
            self._modules.pop(name, None)
        boxed.clear()
        for box_name, box in boxes.items():
            items = box.items() if isinstance(box, dict) else enumerate(box)
            for k, v in items:
                name = f"{box_name}.{k}"
                if isinstance(v, Parameter):
                    self._params[name], v.name = v, name
                elif isinstance(v, Module):
                    self._modules[name], v._scope_name = v, name
                elif isinstance(v, np.ndarray) and v.dtype.kind == "f":
                    raise TypeError(
                        f"{type(self).__name__}: {box_name}[{k!r}] is a NumPy array, which "
                        f"parameters() cannot train; store Parameter(array) instead"
                    )
                else:
                    continue
                boxed.add(name)

    # ---------------------------------------------------------------- parameters
    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """(dotted name, parameter) pairs, e.g. ``("conv1.weight", ...)``."""
        self._sync_containers()
        for name, p in self._params.items():
            yield prefix + name, p
        for name, m in self._modules.items():
            yield from m.named_parameters(prefix + name + ".")

    def parameters(self) -> list[Parameter]:
        """Every parameter, in registration order (sub-modules after own parameters)."""
        return [p for _, p in self.named_parameters()]

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """(dotted name, module) pairs, this module first with name ``""``."""
        self._sync_containers()
        yield prefix.rstrip("."), self
        for name, m in self._modules.items():
            yield from m.named_modules(prefix + name + ".")

    # ---------------------------------------------------------------- buffers
    def register_buffer(self, name: str, array: np.ndarray) -> None:
        """Keep ``array`` as ``self.<name>``: state that is saved with the parameters
        (``state_dict``, params files, checkpoints) but not trained, such as BatchNorm's
        running statistics. The module updates it in place; assigning a new array of the
        attribute later replaces it.
        """
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"register_buffer: name must be an identifier, got {name!r}")
        if name in self._params or name in self._modules or name in self._containers:
            raise ValueError(f"register_buffer: {type(self).__name__}.{name} already exists")
        self._check_buffer(name, array)
        self._buffers[name] = array
        object.__setattr__(self, name, array)

    def _check_buffer(self, name: str, array: Any) -> None:
        if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
            raise TypeError(
                f"{type(self).__name__}: buffer {name!r} must be a real numeric ndarray, "
                f"got {type(array).__name__}"
            )

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        """(dotted name, array) pairs of every buffer, e.g. ``("bn1.running_mean", ...)``."""
        for path, m in self.named_modules():
            for name, array in m._buffers.items():
                yield prefix + (f"{path}.{name}" if path else name), array

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The live arrays ``state_dict`` copies (parameters, then buffers), by dotted name;
        for checking a state's names and shapes before loading it."""
        arrays = {name: p.numpy() for name, p in self.named_parameters()}
        arrays.update(self.named_buffers())
        return arrays

    def zero_grad(self) -> None:
        """Drop every parameter's gradient (``backward`` accumulates into ``.grad``)."""
        for p in self.parameters():
            p.grad = None

    def train(self, mode: bool = True) -> Module:
        """Set training mode (Dropout active, BatchNorm on batch statistics) on this module
        and all sub-modules."""
        for _, m in self.named_modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self) -> Module:
        """Set evaluation mode (Dropout off, BatchNorm on its running statistics)."""
        return self.train(False)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every parameter's and buffer's array, by dotted name."""
        return {name: a.copy() for name, a in self.state_arrays().items()}

    def load_state_dict(self, state: dict[str, np.ndarray], strict: bool = True) -> None:
        """Copy arrays into the parameters and buffers in place (cast to each one's dtype).

        A missing, extra (when ``strict``) or mis-shaped entry raises ``ValueError`` naming it;
        nothing is changed unless every entry fits.
        """
        params = dict(self.named_parameters())
        targets = self.state_arrays()
        checked = check_state_dict(targets, state, strict)
        for name, array in checked.items():  # a parameter through .data: counts the write
            np.copyto(params[name].data if name in params else targets[name], array)

    # ---------------------------------------------------------------- calling
    def forward(self, *args: Any) -> Tensor:
        hint = (
            " (this class has predict(); rename it to forward)" if hasattr(self, "predict") else ""
        )
        raise NotImplementedError(
            f"{type(self).__name__}: define forward(self, x) returning the output Tensor; "
            f"calling the module runs it{hint}"
        )

    def __call__(self, *args: Any) -> Tensor:
        with module_scope(self._scope_name):
            out = self.forward(*args)
        for hook in self._forward_hooks:
            new = hook(self, args, out)
            if new is not None:
                if isinstance(out, Tensor) and not isinstance(new, Tensor):
                    raise TypeError(
                        f"{self._scope_name}: a forward hook returned a {type(new).__name__}; "
                        "return a Tensor (computed with Tensor ops, so gradients still flow) "
                        "or None to keep the output"
                    )
                out = new
        return out

    def register_forward_hook(
        self, hook: Callable[[Module, tuple[Any, ...], Any], Any]
    ) -> RemovableHandle:
        """Call ``hook(module, inputs, output)`` after every call of this module.

        A hook that returns a value replaces the output. Hooks run in the order registered,
        in the calling thread. Returns a handle whose ``remove()`` takes the hook away.

        Examples
        --------
        >>> acts = {}
        >>> h = net.conv1.register_forward_hook(lambda m, xs, y: acts.update(conv1=y))
        >>> h.remove()                                                   # doctest: +SKIP
        """
        if not callable(hook):
            raise TypeError(
                f"register_forward_hook: hook must be callable, got {type(hook).__name__}"
            )
        object.__setattr__(self, "_forward_hooks", (*self._forward_hooks, hook))

        def remove() -> None:
            kept = tuple(h for h in self._forward_hooks if h is not hook)
            object.__setattr__(self, "_forward_hooks", kept)

        return RemovableHandle(remove)

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
    """Max pooling layer: (N, C, H, W) -> (N, C, OH, OW); see ``functional.max_pool2d``."""

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool2d(MaxPool2d):
    """Average pooling layer: (N, C, H, W) -> (N, C, OH, OW); see ``functional.avg_pool2d``."""

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding)


class ReLU(Module):
    """``max(x, 0)``, any shape."""

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x)


class Sigmoid(Module):
    """``1 / (1 + exp(-x))``, any shape."""

    def forward(self, x: Tensor) -> Tensor:
        return F.sigmoid(x)


class Flatten(Module):
    """(N, C, H, W) -> (N, C*H*W) (dims from ``start_dim`` merged)."""

    def __init__(self, start_dim: int = 1) -> None:
        super().__init__()
        self.start_dim = start_dim

    def forward(self, x: Tensor) -> Tensor:
        return F.flatten(x, self.start_dim)


class Dropout(Module):
    """Zeroes a fraction ``p`` of the units in training mode.

    ``inverted=True`` (the default, as in PyTorch): the kept units are scaled by 1/(1-p) in
    training and eval mode returns ``x`` unchanged. ``inverted=False`` is the book's
    ``Dropout`` (ch. 6): the kept units pass unscaled in training and eval mode multiplies
    by 1-p. Both compute the same expected values; the next layer's weights differ by the
    factor 1-p between the two (see ``models.DeepConvNet``, whose weights are stored for
    inverted dropout and converted to and from the book's).
    """

    def __init__(
        self,
        p: float = 0.5,
        rng: int | np.random.Generator | None = None,
        inverted: bool = True,
    ) -> None:
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p, self.rng, self.inverted = p, _rng(rng), bool(inverted)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` (any shape) with dropout in training mode; in eval mode ``x`` itself (as a
        Tensor), or ``x * (1 - p)`` when not ``inverted``."""
        if not isinstance(x, Tensor):
            x = Tensor(x)
        if self.p == 0:
            return x
        scale = x.dtype.type(1 - self.p)
        if not self.training:
            return x if self.inverted else F.mul(x, Tensor(np.asarray(scale)))
        keep = (self.rng.random(x.shape) >= self.p).astype(x.dtype)
        return F.mul(x, Tensor(keep / scale if self.inverted else keep))

    def extra_repr(self) -> str:
        return f"p={self.p}" + ("" if self.inverted else ", inverted=False")


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


def predict_classes(net: Module, x: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """Arg-max class of every image in ``x`` (N, ...), in eval mode without a graph: (N,)."""
    modes = [(m, m.training) for _, m in net.named_modules()]  # each module's own mode
    net.eval()
    try:
        with no_grad(), parallel.threads():
            parts = [
                net(x[i : i + batch_size]).numpy().argmax(axis=1)
                for i in range(0, len(x), batch_size)
            ]
    finally:
        for m, mode in modes:
            object.__setattr__(m, "training", mode)
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def __getattr__(name: str) -> Any:
    """``nn.SimpleConvNet`` still works; the network itself lives in ``models``."""
    if name == "SimpleConvNet":
        from .models import SimpleConvNet

        return SimpleConvNet
    if name in _LAYERS:  # more layers live in ``layers`` (it builds on this module)
        from . import layers

        return getattr(layers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_LAYERS = ("ConvTranspose2d", "Embedding", "LeakyReLU", "GELU", "Tanh", "MSELoss",
           "BCEWithLogitsLoss", "CrossEntropyLoss", "Identity", "BatchNorm1d",
           "BatchNorm2d")  # fmt: skip
