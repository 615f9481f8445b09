"""The ``Tensor`` class: construction and dtype rules, properties, conversion, repr, hashing,
and the methods and operators that delegate to ``functional``.
"""

from __future__ import annotations

import numpy as np
import pytest

import tinygrad_cnn.functional as F
from tinygrad_cnn import Tensor


def arange(*shape: int, dtype=np.float64) -> np.ndarray:
    return (np.arange(int(np.prod(shape)), dtype=dtype) - 3.5).reshape(shape) / 4


# ----------------------------------------------------------------------------- construction
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_arrays_keep_their_dtype(dtype):
    a = np.ones((2, 3), dtype=dtype)
    t = Tensor(a, requires_grad=True)
    assert t.dtype == dtype and t.requires_grad


@pytest.mark.parametrize("value", [3, 2.5, True, [1, 2, 3], [[1.0, 2.0], [3.0, 4.0]], [[1, 2.5]]])
def test_python_scalars_and_lists_become_float32(value):
    t = Tensor(value)
    assert t.dtype == np.float32
    np.testing.assert_array_equal(t.data, np.asarray(value, dtype=np.float32))


def test_python_float_tensor_can_require_grad():
    t = Tensor([1.0, 2.0], requires_grad=True)
    (t * t).sum().backward()
    np.testing.assert_array_equal(t.grad, [2.0, 4.0])
    assert t.grad.dtype == np.float32


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.bool_])
def test_integer_and_bool_arrays_stay_as_they_are(dtype):
    t = Tensor(np.array([1, 0, 1], dtype=dtype))
    assert t.dtype == dtype and not t.requires_grad


def test_numpy_scalars_keep_their_dtype():
    assert Tensor(np.float64(1.5)).dtype == np.float64
    assert Tensor(np.int32(2)).dtype == np.int32
    assert Tensor(np.float64(1.5)).shape == ()


def test_integer_tensor_cannot_require_grad():
    with pytest.raises(TypeError, match="floating"):
        Tensor(np.arange(3), requires_grad=True)


@pytest.mark.parametrize(
    "data",
    [np.array([1, "a"], dtype=object), np.array([1 + 2j]), np.array(["x", "y"])],
    ids=["object", "complex", "str"],
)
def test_unsupported_dtypes_raise_type_error(data):
    with pytest.raises(TypeError, match="dtype"):
        Tensor(data)


@pytest.mark.parametrize("value", [None, "1.5"], ids=["None", "str"])
def test_non_numeric_python_values_raise_type_error(value):
    # np.asarray(None, dtype=float32) is nan and np.asarray("1.5", dtype=float32) is 1.5:
    # neither may become a tensor silently.
    with pytest.raises(TypeError):
        Tensor(value)


def test_tensor_from_tensor_shares_data():
    a = Tensor(arange(2, 2))
    b = Tensor(a)
    assert b.numpy() is a.numpy() and b._ctx is None


# ----------------------------------------------------------------------------- properties
@pytest.mark.parametrize("shape", [(), (5,), (2, 3), (2, 1, 4, 3)])
def test_shape_ndim_size_dtype_len(shape):
    a = np.zeros(shape, dtype=np.float32)
    t = Tensor(a)
    assert t.shape == shape and t.ndim == len(shape) and t.size == a.size
    assert t.dtype == np.float32
    if shape:
        assert len(t) == shape[0]


def test_is_leaf_and_op():
    x = Tensor(arange(3), requires_grad=True)
    y = x * 2.0
    assert x.is_leaf and x.op is None
    assert not y.is_leaf and y.op is y._ctx and y.op.name == "Mul"


# ----------------------------------------------------------------------------- conversion
def test_numpy_returns_the_underlying_array():
    a = arange(2, 3)
    t = Tensor(a)
    assert t.numpy() is a and type(t.numpy()) is np.ndarray
    assert np.shares_memory(t.data, a) and isinstance(t.data, np.ndarray)
    np.testing.assert_array_equal(t.numpy(), a)


@pytest.mark.parametrize("shape", [(), (1,), (1, 1, 1)])
def test_item_of_single_element(shape):
    t = Tensor(np.full(shape, 2.5))
    value = t.item()
    assert value == 2.5 and type(value) is float


def test_item_of_integer_tensor_is_int():
    value = Tensor(np.array([7], dtype=np.int64)).item()
    assert value == 7 and type(value) is int


def test_item_of_non_scalar_raises():
    with pytest.raises(ValueError, match=r"\(2, 2\)"):
        Tensor(np.ones((2, 2))).item()


def test_detach_shares_data_but_leaves_the_graph():
    x = Tensor(arange(3), requires_grad=True, name="x")
    y = x * 2.0
    d = y.detach()
    assert np.shares_memory(d.data, y.data)
    assert d.is_leaf and not d.requires_grad and d.grad is None
    z = (d * x).sum()
    z.backward()
    np.testing.assert_array_equal(x.grad, d.data)  # no gradient flowed through d into x twice
    assert x.detach().name == "x"


def test_astype_is_a_leaf_copy():
    x = Tensor(arange(3), requires_grad=True)
    y = x.astype(np.float32)
    assert y.dtype == np.float32 and y.is_leaf and not y.requires_grad
    assert not np.shares_memory(x.data, y.data)


def test_zero_grad():
    x = Tensor(arange(3), requires_grad=True)
    (x * 3.0).sum().backward()
    assert x.grad is not None
    x.zero_grad()
    assert x.grad is None


# ----------------------------------------------------------------------------- repr, hash
def test_repr_of_a_named_leaf():
    t = Tensor(np.ones((2, 3), np.float32), requires_grad=True, name="conv1.weight")
    r = repr(t)
    assert r.startswith("Tensor(")
    for part in ("name='conv1.weight'", "shape=(2, 3)", "dtype=float32", "requires_grad=True"):
        assert part in r


def test_repr_of_a_non_leaf_names_its_op():
    x = Tensor(np.ones(3), requires_grad=True)
    r = repr(x.exp())
    assert "op=Exp" in r and "shape=(3,)" in r and "dtype=float64" in r
    assert "name=" not in r


def test_repr_of_a_large_tensor_is_summarised():
    r = repr(Tensor(np.arange(10_000.0)))
    assert "..." in r and len(r) < 300 and "shape=(10000,)" in r


def test_tensors_are_hashable_by_identity():
    a, b = Tensor(np.ones(3)), Tensor(np.ones(3))
    assert len({a, b, a}) == 2
    d = {a: "a", b: "b"}
    assert d[a] == "a" and d[b] == "b"
    assert hash(a) == hash(a) and a in {a} and a not in {b}


def test_equality_is_elementwise_like_numpy_and_pytorch():
    y = Tensor(np.array([[0.1, 0.9], [0.8, 0.2]], dtype=np.float32))
    t = np.array([1, 1])
    hits = y.argmax(1) == t  # the book's accuracy line, on a Tensor
    assert isinstance(hits, Tensor) and hits.numpy().tolist() == [True, False]
    assert (y != Tensor(y.numpy())).numpy().sum() == 0
    with pytest.raises(ValueError, match="ambiguous"):
        bool(y == y)


# ----------------------------------------------------------------------------- methods
X = arange(2, 3, 4)

METHODS = {
    "sum": (lambda t: t.sum(), lambda a: a.sum(), "Sum"),
    "sum_axis": (lambda t: t.sum(axis=1), lambda a: a.sum(axis=1), "Sum"),
    "sum_axes_keep": (
        lambda t: t.sum(axis=(0, 2), keepdims=True),
        lambda a: a.sum(axis=(0, 2), keepdims=True),
        "Sum",
    ),
    "mean": (lambda t: t.mean(), lambda a: a.mean(), "Mean"),
    "mean_axis": (lambda t: t.mean(axis=-1), lambda a: a.mean(axis=-1), "Mean"),
    "max": (lambda t: t.max(), lambda a: a.max(), "Max"),
    "max_axis_keep": (
        lambda t: t.max(axis=2, keepdims=True),
        lambda a: a.max(axis=2, keepdims=True),
        "Max",
    ),
    "reshape_args": (lambda t: t.reshape(6, 4), lambda a: a.reshape(6, 4), "Reshape"),
    "reshape_tuple": (lambda t: t.reshape((4, -1)), lambda a: a.reshape(4, -1), "Reshape"),
    "transpose": (lambda t: t.transpose(), lambda a: a.transpose(), "Transpose"),
    "transpose_args": (lambda t: t.transpose(1, 0, 2), lambda a: a.transpose(1, 0, 2), "Transpose"),
    "transpose_tuple": (
        lambda t: t.transpose((2, 0, 1)),
        lambda a: a.transpose(2, 0, 1),
        "Transpose",
    ),
    "T": (lambda t: t.T, lambda a: a.T, "Transpose"),
    "flatten": (lambda t: t.flatten(), lambda a: a.reshape(2, 12), "Reshape"),
    "flatten_0": (lambda t: t.flatten(0), lambda a: a.reshape(24), "Reshape"),
    "flatten_2": (lambda t: t.flatten(2), lambda a: a.reshape(2, 3, 4), "Reshape"),
    "exp": (lambda t: t.exp(), np.exp, "Exp"),
    "log": (lambda t: (t * t + 1.0).log(), lambda a: np.log(a * a + 1.0), "Log"),
    "relu": (lambda t: t.relu(), lambda a: np.maximum(a, 0), "ReLU"),
    "sigmoid": (lambda t: t.sigmoid(), lambda a: 1 / (1 + np.exp(-a)), "Sigmoid"),
    "tanh": (lambda t: t.tanh(), np.tanh, "Tanh"),
    "neg": (lambda t: -t, lambda a: -a, "Neg"),
    "pow": (lambda t: t**3, lambda a: a**3, "Pow"),
    "getitem_int": (lambda t: t[1], lambda a: a[1], "GetItem"),
    "getitem_slices": (lambda t: t[:, 1:, ::2], lambda a: a[:, 1:, ::2], "GetItem"),
    "getitem_ellipsis": (lambda t: t[..., -1], lambda a: a[..., -1], "GetItem"),
    "getitem_array": (lambda t: t[np.array([1, 1, 0])], lambda a: a[[1, 1, 0]], "GetItem"),
    "getitem_tensor": (lambda t: t[Tensor(np.array([1, 0, 1]))], lambda a: a[[1, 0, 1]], "GetItem"),
    "getitem_pairs": (
        lambda t: t[np.array([0, 1]), :, np.array([3, 3])],
        lambda a: a[[0, 1], :, [3, 3]],
        "GetItem",
    ),
    "getitem_mask": (lambda t: t[X > 0], lambda a: a[a > 0], "GetItem"),
}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_delegates_to_its_op(name):
    method, reference, op = METHODS[name]
    x = Tensor(X.copy(), requires_grad=True)
    y = method(x)
    expected = reference(X)
    assert y.shape == np.shape(expected)
    np.testing.assert_allclose(y.data, expected, rtol=1e-14)
    assert y.op is not None and y.op.name == op
    gy = np.random.default_rng(0).standard_normal(y.shape)
    y.backward(gy)
    assert x.grad.shape == X.shape  # the op wired itself into the graph


@pytest.mark.parametrize(
    ("expr", "op"),
    [
        (lambda a, b: a + b, "Add"),
        (lambda a, b: a - b, "Sub"),
        (lambda a, b: a * b, "Mul"),
        (lambda a, b: a / b, "Div"),
        (lambda a, b: a @ b.T, "MatMul"),
    ],
    ids=["add", "sub", "mul", "div", "matmul"],
)
def test_operators_delegate_to_their_ops(expr, op):
    a = arange(3, 4)
    b = arange(3, 4) + 10.0
    y = expr(Tensor(a, requires_grad=True), Tensor(b))
    assert y.op.name == op
    np.testing.assert_allclose(y.data, expr(a, b))


def test_tensor_indices_inside_a_tuple_are_unwrapped():
    # ``t[Tensor(idx)]`` works, so ``t[:, Tensor(idx)]`` (e.g. logits[rows, labels]) should too.
    x = Tensor(X.copy(), requires_grad=True)
    y = x[:, Tensor(np.array([2, 0]))]
    np.testing.assert_array_equal(y.data, X[:, [2, 0]])
    y.sum().backward()
    expected = np.zeros_like(X)
    expected[:, [2, 0]] = 1.0
    np.testing.assert_array_equal(x.grad, expected)


def test_functional_and_methods_agree():
    x = Tensor(X)
    np.testing.assert_array_equal(F.sum(x, 1).data, x.sum(axis=1).data)
    np.testing.assert_array_equal(F.transpose(x).data, x.T.data)
    np.testing.assert_array_equal(F.flatten(x).data, x.flatten().data)


# ----------------------------------------------------------------------------- in-place operators
def test_inplace_update_of_a_parameter_needs_no_grad_and_then_updates_it():
    from tinygrad_cnn import no_grad

    p = Tensor(np.array([1.0, 2.0]), requires_grad=True, name="w")
    p.grad = np.array([10.0, 20.0])
    with pytest.raises(RuntimeError, match=r"Tensor -=: tensor 'w' \(shape \(2,\)\) requires grad"):
        p -= 0.1 * p.grad
    same = p
    with no_grad():
        p -= 0.1 * p.grad
        p *= 2.0
    assert p is same and p.is_leaf
    np.testing.assert_allclose(p.numpy(), [0.0, 0.0], atol=1e-12)


def test_inplace_on_an_intermediate_makes_a_new_tensor_and_on_a_constant_updates_it():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    h = x * 2.0
    before = h
    h += 1.0  # recorded: a new tensor, gradients still flow
    assert h is not before and h.op.name == "Add"
    h.sum().backward()
    np.testing.assert_array_equal(x.grad, [2.0, 2.0])
    c = Tensor(np.array([1.0, 2.0]))
    same = c
    c += np.array([1.0, 1.0])
    assert c is same
    np.testing.assert_array_equal(c.numpy(), [2.0, 3.0])
    with pytest.raises(ValueError, match=r"Tensor \+=: cannot update a tensor of shape \(2,\)"):
        c += np.ones(3)


def test_an_inplace_update_of_a_saved_tensor_is_caught_at_backward():
    from tinygrad_cnn import no_grad

    a = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    b = Tensor(np.array([3.0, 4.0]), requires_grad=True, name="b")
    y = (a * b).sum()
    with no_grad():
        b -= 1.0
    with pytest.raises(RuntimeError, match="tensor 'b'.*changed in place"):
        y.backward()


def test_one_element_tensors_convert_and_format_like_numbers():
    loss = Tensor(np.array(2.40759, np.float32))
    assert float(loss) == pytest.approx(2.40759) and int(Tensor(np.array(3.0))) == 3
    assert f"{loss:.3f}" == "2.408" and f"{loss}" == str(loss)
    with pytest.raises(ValueError, match="has 2 elements, not 1"):
        float(Tensor(np.ones(2)))
