"""Tests added while triaging mutmut's survivors in io.py, data.py and optim.py.

See scripts/MUTATION.md. Each pins a documented behaviour: which file or entry an error names,
exact boundaries of the IDX and state checks, and the optimizers' hyperparameter names.
"""

from __future__ import annotations

import errno
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tinygrad_cnn import Tensor, optim
from tinygrad_cnn.data import BatchIterator, read_idx
from tinygrad_cnn.io import check_state_dict, load_npz, parse_idx, save_npz


def _idx(magic: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims) + payload


# --------------------------------------------------------------------------- IDX


def test_idx_boundaries_and_messages() -> None:
    # exactly 4 bytes: a magic number but a truncated header
    with pytest.raises(ValueError, match=r"^f: truncated IDX header \(4 of 8 bytes\)$"):
        parse_idx((0x801).to_bytes(4, "big"), "f")
    with pytest.raises(ValueError, match=r"magic number is a file shorter than 4 bytes, expected "):
        parse_idx(b"\0\0\x08", "f")
    with pytest.raises(ValueError, match=r"\(uint8 labels\) or 0x00000803 \(uint8 images\)$"):
        parse_idx(b"\0\0\x08\x02", "f")
    # a header and no items: 8 bytes are a complete, empty label file
    assert parse_idx(_idx(0x801, (0,), b""), "f").shape == (0,)
    # big-endian dimensions, each read from its own 4 bytes
    images = _idx(0x803, (2, 1, 3), bytes(range(6)))
    np.testing.assert_array_equal(parse_idx(images, "f"), np.arange(6).reshape(2, 1, 3))
    assert parse_idx(_idx(0x803, (1, 256, 1), bytes(256)), "f").shape == (1, 256, 1)
    assert parse_idx(_idx(0x803, (1, 1, 65536), bytes(65536)), "f").shape == (1, 1, 65536)
    with pytest.raises(ValueError, match=r"declares shape \(16777217,\), so expected 16777225 "):
        parse_idx(_idx(0x801, (2**24 + 1,), b""), "f")  # all four bytes of a dimension count
    with pytest.raises(ValueError, match=r"^f: IDX data truncated: header declares shape \(3,\)"):
        parse_idx(_idx(0x801, (3,), b"ab"), "f")
    with pytest.raises(ValueError, match=r"^f: IDX data has trailing bytes: .* expected 11 bytes"):
        parse_idx(_idx(0x801, (3,), b"abcd"), "f")


def test_read_idx_names_a_missing_idx_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"IDX file") as info:
        read_idx(tmp_path / "nope")
    assert info.value.errno == errno.ENOENT
    assert info.value.filename == str(tmp_path / "nope")
    assert "nope" in str(info.value) and "no such IDX file" in str(info.value)


# --------------------------------------------------------------------------- state dicts


def test_check_state_dict_names_the_caller_and_the_entry() -> None:
    params = {"a": np.zeros(2, np.float32), "b": np.zeros(3, np.float32)}
    with pytest.raises(ValueError, match=r"^load_state_dict: entry 'b' has dtype <U1"):
        check_state_dict(params, {"a": np.ones(2), "b": np.array(list("xyz"))})
    with pytest.raises(ValueError, match=r"^load_state_dict: entry 'a' is not an array"):
        check_state_dict(params, {"a": [[1.0], [1.0, 2.0]], "b": np.ones(3)})
    with pytest.raises(ValueError, match=r"^Trainer: b has shape"):
        check_state_dict(params, {"a": np.ones(2), "b": np.ones(4)}, who="Trainer")
    # strict=False skips an absent first entry and still checks the later ones
    with pytest.raises(ValueError, match=r"entry 'b' has dtype complex128"):
        check_state_dict(params, {"b": np.ones(3, complex)}, strict=False)
    out = check_state_dict(params, {"b": np.arange(3)}, strict=False)
    assert list(out) == ["b"] and out["b"].dtype == np.float32


def test_check_state_dict_overflow_is_an_error_not_a_warning() -> None:
    params = {"a": np.zeros(2, np.float16)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"'a' \(float64\) overflows the parameter's float16"):
            check_state_dict(params, {"a": np.array([1.0, 1e6])})
        with pytest.raises(ValueError, match="overflows"):
            check_state_dict({"a": np.zeros(1, np.float32)}, {"a": np.array([1e300])})
        out = check_state_dict(params, {"a": np.array([np.nan, np.inf])})  # not an overflow
    assert np.isnan(out["a"][0]) and np.isinf(out["a"][1])


def test_save_npz_names_bad_keys_and_compresses_on_request(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"^save_npz: array names must be str, got int$"):
        save_npz(tmp_path / "a.npz", {1: np.zeros(2)})
    big = {"z": np.zeros(100_000, np.float32)}
    save_npz(tmp_path / "plain.npz", big)
    save_npz(tmp_path / "small.npz", big, compressed=True)
    with zipfile.ZipFile(tmp_path / "small.npz") as z:
        assert z.getinfo("z.npy").compress_type == zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(tmp_path / "plain.npz") as z:
        assert z.getinfo("z.npy").compress_type == zipfile.ZIP_STORED
    np.testing.assert_array_equal(load_npz(tmp_path / "small.npz")["z"], big["z"])


# --------------------------------------------------------------------------- BatchIterator


def test_batch_iterator_messages_defaults_and_positions() -> None:
    with pytest.raises(ValueError, match=r"^BatchIterator needs at least one array$"):
        BatchIterator()
    with pytest.raises(ValueError, match=r"share their first dimension, got shapes \[\(3,\), \(2,"):
        BatchIterator(np.zeros(3), np.zeros((2, 1)))
    assert BatchIterator(np.zeros(250)).batch_size == 100
    gen = np.random.default_rng(5)
    it = BatchIterator(np.arange(10), batch_size=4, seed=gen)
    assert it.rng is gen
    assert it.state_dict()["batches_done"] == 0
    for _ in it:
        pass
    assert it.state_dict()["batches_done"] == 0  # a finished epoch leaves no position
    with pytest.raises(ValueError, match=r"^BatchIterator.load_state_dict: state needs a 'bit_gen"):
        it.load_state_dict({"batches_done": 1})
    with pytest.raises(ValueError, match=r"batches_done must be an int in \[0, 3\], got 4"):
        it.load_state_dict({"bit_generator": it.rng.bit_generator.state, "batches_done": 4})
    with pytest.raises(ValueError, match=r"bad generator state for PCG64 \((KeyError|TypeError|V)"):
        it.load_state_dict({"bit_generator": {"bit_generator": "PCG64"}})
    # the last batch of an epoch may be restored (3 of 3 done: the next epoch starts fresh)
    it.load_state_dict({"bit_generator": it.rng.bit_generator.state, "batches_done": 3})
    assert it.state_dict()["batches_done"] == 3
    assert list(it) == []
    # a state without batches_done means the start of an epoch
    fresh = BatchIterator(np.arange(10), batch_size=4, seed=1)
    fresh.load_state_dict({"bit_generator": fresh.rng.bit_generator.state})
    assert len(list(fresh)) == 3


def test_batch_iterator_state_is_a_deep_snapshot() -> None:
    it = BatchIterator(np.arange(10), batch_size=4, seed=0)
    batches = iter(it)
    next(batches)
    state = it.state_dict()
    snapshot = repr(state)
    inner = state["bit_generator"]["state"]
    inner["state"] += 1  # the caller edits its copy...
    assert repr(it.state_dict()) == snapshot  # ...and the iterator's own position is unchanged
    inner["state"] -= 1
    it.load_state_dict(state)
    state["bit_generator"]["state"]["state"] += 1  # ...nor after loading it
    resumed = [b[0].tolist() for b in it]
    expected = [b[0].tolist() for b in BatchIterator(np.arange(10), batch_size=4, seed=0)][1:]
    assert resumed == expected


# --------------------------------------------------------------------------- optimizers


def _p() -> Tensor:
    p = Tensor(np.ones(3, np.float32), requires_grad=True)
    p.grad = np.ones(3, np.float32)
    return p


@pytest.mark.parametrize(
    ("cls", "kwargs", "message"),
    [
        (optim.AdaGrad, {"eps": 0.0}, r"^eps must be > 0, got 0.0$"),
        (optim.RMSprop, {"eps": -1.0}, r"^eps must be > 0, got -1.0$"),
        (optim.RMSprop, {"decay_rate": 1.0}, r"^decay_rate must be in \[0, 1\), got 1.0$"),
        (optim.Adam, {"eps": 0}, r"^eps must be > 0"),
    ],
)
def test_optimizer_hyperparameter_errors_name_the_hyperparameter(cls, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        cls([_p()], **kwargs)


def test_optimizer_errors_label_parameters_by_index_and_name() -> None:
    anonymous, named = _p(), _p()
    named.name = "fc.w"
    opt = optim.SGD([anonymous, named], lr=0.1)
    anonymous.grad = np.ones(2, np.float32)
    with pytest.raises(ValueError, match=r"^parameter 0: grad is \(2,\) float32"):
        opt.step()
    anonymous.grad = None
    named.grad = np.ones(3, np.float64)
    with pytest.raises(ValueError, match=r"^parameter 1 \(fc\.w\): grad is"):
        opt.step()


def test_optimizer_load_state_dict_checks_counts_and_keys() -> None:
    opt = optim.Momentum([_p()], lr=0.1)
    good = opt.state_dict()
    for key, value, message in [
        ("step", -1, r"'step' must be a non-negative integer"),
        ("state.0.t", 1.0, r"'state.0.t' must be a non-negative integer"),
        ("lr", "0.1", r"'lr' must be a real scalar"),
        ("state.0.v", np.zeros(3, np.float64), r"'state.0.v' is \(3,\) float64; parameter 0 "),
    ]:
        with pytest.raises(ValueError, match=message):
            opt.load_state_dict({**good, key: value})
    opt.load_state_dict({**good, "step": 0, "state.0.t": np.int64(0)})  # 0 is allowed
    assert opt.step_count == 0
    # a key with two dots that is not a state entry is an unexpected entry, not a parameter
    with pytest.raises(ValueError, match=r"unexpected entry 'x.1.y'"):
        opt.load_state_dict({**good, "x.1.y": 0})


def test_get_optimizer_lists_bad_and_accepted_keywords() -> None:
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) beta, gamma; "):
        optim.get_optimizer("sgd", [_p()], beta=1, gamma=2)
    with pytest.raises(TypeError, match=r"accepted: lr, weight_decay"):
        optim.get_optimizer("SGD", [_p()], momentum=0.9)
