"""Joining and padding: concatenate tensors along an axis, pad with a constant."""

from __future__ import annotations

import numpy as np

from ..autograd import Function
from .shape import GetItem


class Cat(Function):
    """Inputs concatenated along ``axis`` (non-negative); same shape elsewhere."""

    attr_names = ("axis",)
    axis: int

    def forward(self, *xs):
        try:
            y = np.concatenate(xs, axis=self.axis)
        except ValueError:
            shapes = ", ".join(str(x.shape) for x in xs)
            raise ValueError(
                f"cat: inputs of shapes {shapes} cannot be joined along axis {self.axis}: they "
                "must match except along it"
            ) from None
        self.sizes = [x.shape[self.axis] for x in xs]
        return y

    def _pieces(self, ndim: int) -> list[tuple[slice, ...]]:
        """Where each input lies in the output."""
        bounds = np.cumsum([0, *self.sizes])
        lead = (slice(None),) * self.axis
        return [
            (*lead, slice(int(lo), int(hi))) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)
        ]

    def backward(self, gy):
        return tuple(
            gy[index] if need else None
            for index, need in zip(self._pieces(gy.ndim), self.needs_input_grad, strict=True)
        )

    def backward_graph(self, gy):
        return tuple(
            GetItem.apply(gy, index=index) if need else None
            for index, need in zip(self._pieces(gy.ndim), self.needs_input_grad, strict=True)
        )


class Pad(Function):
    """``x`` padded with the constant ``value``; ``pad_width`` holds one (before, after) pair
    of non-negative ints per axis (NumPy's order: first axis first)."""

    attr_names = ("pad_width", "value")
    pad_width: tuple[tuple[int, int], ...]
    value: float

    def forward(self, x):
        if len(self.pad_width) != x.ndim:
            raise ValueError(f"pad: pad_width {self.pad_width} does not fit an input {x.shape}")
        self.index = tuple(
            slice(lo, lo + n) for (lo, _), n in zip(self.pad_width, x.shape, strict=True)
        )
        return np.pad(x, self.pad_width, constant_values=self.value)

    def backward(self, gy):
        return gy[self.index]

    def backward_graph(self, gy):
        return GetItem.apply(gy, index=self.index)
