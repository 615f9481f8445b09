"""Public, documented wrappers around the ops: ``import tinygrad_cnn.functional as F``.

Every function takes Tensors (or arrays / Python numbers, which become constant tensors) and
returns a Tensor recorded in the graph when any input requires grad. The wrappers live in three
modules by family, all re-exported here: ``functional_core`` (the ones ``Tensor`` operators and
the book's networks use), ``functional_tensor`` (shape ops, math, reductions) and
``functional_nn`` (activations, losses, layers).
"""

from __future__ import annotations

from . import functional_core as _core
from . import functional_nn as _nn
from . import functional_tensor as _tensor
from .functional_core import *  # noqa: F403
from .functional_core import Axis, TensorLike  # noqa: F401  (type aliases used by callers)
from .functional_nn import *  # noqa: F403
from .functional_tensor import *  # noqa: F403

__all__ = [*_core.__all__, *_tensor.__all__, *_nn.__all__]
