"""Tests added while triaging mutmut's survivors in io.py, data.py and optim.py.

See scripts/MUTATION.md. Each pins a documented behaviour: which file or entry an error names,
exact boundaries of the IDX and state checks, and the optimizers' hyperparameter names.
"""

from __future__ import annotations

import errno
import os
import subprocess
import types
import warnings
import zipfile
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from oracles import live_writer

import tinygrad_cnn.io as tio
from tinygrad_cnn import Tensor, optim
from tinygrad_cnn.data import BatchIterator, read_idx
from tinygrad_cnn.io import check_state_dict, load_npz, npz_info, parse_idx, save_npz


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


# --------------------------------------------------------------------------- second pass


class _DictLike:
    """Has ``keys`` and item access but is not a registered ``Mapping``."""

    def __init__(self, **arrays: np.ndarray) -> None:
        self._arrays = arrays

    def keys(self):
        return self._arrays.keys()

    def __iter__(self):
        return iter(self._arrays)

    def __contains__(self, name: object) -> bool:
        return name in self._arrays

    def __getitem__(self, name: str) -> np.ndarray:
        return self._arrays[name]


def test_check_state_dict_names_unexpected_entries_and_the_wrong_type() -> None:
    params = {"a": np.zeros(2, np.float32), "b": np.zeros(3, np.float32)}
    with pytest.raises(ValueError, match=r"^load_state_dict: unexpected entries \['x'\]$"):
        check_state_dict(params, {"a": np.ones(2), "b": np.ones(3), "x": np.ones(1)})
    both = r"^load_state_dict: missing parameters \['b'\], unexpected entries \['x'\]$"
    with pytest.raises(ValueError, match=both):
        check_state_dict(params, {"a": np.ones(2), "x": np.ones(1)})
    with pytest.raises(TypeError, match=r"^load_state_dict: state must be a mapping .*, got list$"):
        check_state_dict(params, [("a", np.ones(2))])
    # duck typing: anything with keys() and item access is a state
    out = check_state_dict(params, _DictLike(a=np.ones(2), b=np.arange(3)))
    assert out["b"].dtype == np.float32 and out["b"].tolist() == [0.0, 1.0, 2.0]


def test_no_cast_warning_escapes_for_an_integer_buffer() -> None:
    """Integer targets exist (any user ``register_buffer`` of an integer array): casting NaN,
    inf or 1e30 to them sets NumPy's invalid flag, which must not leak out as a
    RuntimeWarning (an error under ``-W error``); the entry is refused instead."""
    params = {"n": np.zeros(3, np.int8)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"entry 'n' \(float64\) has values the"):
            check_state_dict(params, {"n": np.array([np.nan, np.inf, 1e30])})


@pytest.mark.parametrize("value", [np.nan, np.inf, 1e30, 300, 1.5])
def test_values_an_integer_buffer_cannot_hold_are_refused(value) -> None:
    with pytest.raises(ValueError, match=r"entry 'n' .* int8 cannot hold"):
        check_state_dict({"n": np.zeros(2, np.int8)}, {"n": np.array([1, value])})
    held = check_state_dict({"n": np.zeros(2, np.int8)}, {"n": np.array([1.0, -3.0])})
    assert held["n"].dtype == np.int8 and held["n"].tolist() == [1, -3]


def test_a_writer_we_may_not_signal_is_alive_and_its_temp_file_kept(tmp_path, monkeypatch) -> None:
    """As a non-root user, signalling another user's process (PID 1 for one) raises
    PermissionError: that process exists, so its temp file is kept."""

    def kill(pid: int, sig: int) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "kill", kill)
    files = [tmp_path / f".ck.npz.{pid}.abcd1234.tmp" for pid in (1, 2, 4321)]
    for f in files:
        f.write_bytes(b"partial")
    assert tio.remove_stale_temp_files(tmp_path / "ck.npz") == []
    assert all(f.exists() for f in files)


def test_a_live_writer_is_only_probed_never_signalled(tmp_path) -> None:
    """The writer resets SIGHUP to its default (it may be inherited as ignored, under nohup),
    so any real signal would end it."""
    with live_writer() as writer:
        live = tmp_path / f".ck.npz.{writer.pid}.abcd1234.tmp"
        live.write_bytes(b"partial")
        assert tio.remove_stale_temp_files(tmp_path / "ck.npz") == []
        with pytest.raises(subprocess.TimeoutExpired):
            writer.wait(0.2)


NO_SUCH_PID = 2**22  # above Linux's PID_MAX_LIMIT: no process ever has it


def test_symlinks_named_like_temp_files_are_kept_whatever_they_point_to(tmp_path) -> None:
    aim = tmp_path / "aim"
    aim.write_bytes(b"keep me")
    old = tmp_path.stat().st_mtime - 7200
    os.utime(aim, (old, old))  # the target alone would be stale by age
    links = [tmp_path / ".ck.npz.efgh5678.tmp", tmp_path / f".ck.npz.{NO_SUCH_PID}.abcd1234.tmp"]
    for link in links:
        link.symlink_to(aim)
        os.utime(link, (old, old), follow_symlinks=False)
    assert tio.remove_stale_temp_files(tmp_path / "ck.npz") == []
    assert all(link.is_symlink() for link in links) and aim.read_bytes() == b"keep me"


def test_a_temp_file_exactly_max_age_old_is_not_yet_stale(tmp_path, monkeypatch) -> None:
    """Older than max_age (or a day, for a live PID) is strict: an equal age is not stale."""
    now = 1_800_000_000.0
    monkeypatch.setattr(tio, "time", types.SimpleNamespace(time=lambda: now))
    no_pid = tmp_path / ".ck.npz.abcd1234.tmp"
    live = tmp_path / f".ck.npz.{os.getppid()}.efgh5678.tmp"  # our parent: alive
    for f, age in ((no_pid, 60.0), (live, 86400.0)):
        f.write_bytes(b"partial")
        os.utime(f, (now - age, now - age))
    assert tio.remove_stale_temp_files(tmp_path / "ck.npz", max_age=60.0) == []
    now += 0.5
    assert sorted(tio.remove_stale_temp_files(tmp_path / "ck.npz", max_age=60.0)) == [live, no_pid]


def test_a_temp_file_that_cannot_be_removed_does_not_stop_the_cleanup(tmp_path, monkeypatch):
    """Another user's file in a shared folder, say: the first removal is refused."""
    real_unlink, calls = os.unlink, []

    def unlink(path, *args, **kwargs) -> None:
        calls.append(path)
        if len(calls) == 1:
            raise PermissionError(errno.EPERM, "Operation not permitted", path)
        real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    files = [tmp_path / f".ck.npz.{NO_SUCH_PID}.abcd123{i}.tmp" for i in range(3)]
    for f in files:
        f.write_bytes(b"partial")
    removed = tio.remove_stale_temp_files(tmp_path / "ck.npz")
    assert len(calls) == 3 and sorted(removed) == sorted(Path(c) for c in calls[1:])
    assert [f.exists() for f in files].count(True) == 1


# --------------------------------------------------------------------------- .npz archives


def _npy(arr: np.ndarray, version: tuple[int, int] = (1, 0)) -> bytes:
    buf = BytesIO()
    np.lib.format.write_array(buf, arr, version=version, allow_pickle=True)
    return buf.getvalue()


def _npz(path: Path, *members: tuple[str, bytes]) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns of a duplicate name
        with zipfile.ZipFile(path, "w") as z:
            for name, raw in members:
                z.writestr(name, raw)
    return path


def test_load_npz_names_a_missing_file_and_a_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no such \.npz file"):
        load_npz(tmp_path / "nope.npz")
    with pytest.raises(IsADirectoryError) as info:
        load_npz(tmp_path)
    assert info.value.errno == errno.EISDIR and info.value.filename == str(tmp_path)
    assert info.value.strerror == f"{tmp_path} is a directory, not a .npz file"


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([("a.txt", b"x")], r"it holds a non-\.npy member 'a\.txt'$"),
        ([("a.npy", _npy(np.ones(2)))] * 2, r"it holds duplicate member 'a\.npy'$"),
        ([("a.npy", _npy(np.array([None])))], r"array 'a' has object dtype \(pickled data is"),
        ([("a.npy", _npy(np.ones(2), (3, 0)))], r"member 'a' has unsupported \.npy version \(3, 0"),
        (
            [("a.npy", _npy(np.zeros(10))[:-40])],
            r"array 'a': its header declares shape \(10,\) float64 \(80 bytes\) but the archive "
            r"member holds 40 bytes$",
        ),
    ],
)
def test_load_npz_says_what_is_wrong_with_an_archive(tmp_path, members, message) -> None:
    path = _npz(tmp_path / "a.npz", *members)
    with pytest.raises(ValueError, match=r"^cannot load .*a\.npz: not a valid \.npz archive"):
        load_npz(path)
    with pytest.raises(ValueError, match=message):
        npz_info(path)


def test_load_npz_refuses_a_single_npy_file(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.ones(2))
    with pytest.raises(ValueError, match=r": it is a single \.npy array, not an \.npz archive$"):
        load_npz(tmp_path / "a.npy")


def test_load_npz_reads_npy_version_2_members(tmp_path: Path) -> None:
    path = _npz(tmp_path / "a.npz", ("a.npy", _npy(np.arange(3.0), (2, 0))))
    assert npz_info(path) == {"a": ((3,), np.dtype(np.float64))}
    np.testing.assert_array_equal(load_npz(path)["a"], np.arange(3.0))


def test_load_npz_max_bytes_counts_all_arrays_together(tmp_path: Path) -> None:
    path = _npz(tmp_path / "a.npz", ("a.npy", _npy(np.zeros(100))), ("b.npy", _npy(np.zeros(100))))
    assert list(load_npz(path, max_bytes=1600)) == ["a", "b"]
    with pytest.raises(ValueError, match=r"need more than 1,599 bytes \(array 'b' is \(100,\)"):
        load_npz(path, max_bytes=1599)


def test_load_npz_checks_expected_names_and_shapes(tmp_path: Path) -> None:
    path = tmp_path / "a.npz"
    save_npz(path, {"a": np.zeros(2), "b": np.zeros((1, 2))})
    with pytest.raises(ValueError, match=r"a\.npz: missing arrays \['c'\]; nothing was read$"):
        load_npz(path, expected={"a": None, "b": None, "c": None})
    with pytest.raises(ValueError, match=r"npz: array 'b' has shape \(1, 2\), expected \(2, 1\)$"):
        load_npz(path, expected={"a": None, "b": (2, 1)})
    assert load_npz(path, expected={"a": [2], "b": None})["b"].shape == (1, 2)


def test_load_npz_reports_damaged_array_data(tmp_path: Path) -> None:
    """The headers are fine, so only reading the data finds the zip's CRC mismatch."""
    path = tmp_path / "a.npz"
    save_npz(path, {"a": np.zeros(1000)})
    raw = bytearray(path.read_bytes())
    raw[raw.index(bytes(800)) + 400] = 1  # inside the array's data, stored uncompressed
    path.write_bytes(raw)
    assert npz_info(path) == {"a": ((1000,), np.dtype(np.float64))}
    with pytest.raises(ValueError, match=r"^cannot load .*a\.npz: damaged \.npz archive: Bad CRC"):
        load_npz(path)


def test_an_archive_swapped_after_its_check_is_still_never_unpickled(tmp_path, monkeypatch):
    """Another process replaces the file between the header scan and the read. The read goes
    by the first archive's directory; both files are large enough that the pickle is read
    whole before the zip's CRC check at the member's end (which would stop it)."""
    path = tmp_path / "a.npz"
    save_npz(path, {"a": np.zeros(40_000)})
    pickled = _npy(np.array([{"x": 1}, None]))
    evil = _npz(tmp_path / "evil.npz", ("a.npy", pickled), ("pad", bytes(400_000)))
    real_zipfile, opened = zipfile.ZipFile, []

    def zip_file(file, *args, **kwargs):
        opened.append(file)
        if len(opened) == 2:  # the scan is done: swap the archive before it is read
            os.replace(evil, path)
        return real_zipfile(file, *args, **kwargs)

    monkeypatch.setattr(zipfile, "ZipFile", zip_file)
    with pytest.raises(ValueError, match=r"damaged \.npz archive: Object arrays cannot be loaded"):
        load_npz(path)
    assert opened == [path, path]
