"""Tests for tinygrad_cnn.io: atomic writes, npz archives and the restricted unpickler."""

from __future__ import annotations

import codecs
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from tinygrad_cnn import io as tio
from tinygrad_cnn.picklesafe import load_book_pickle


def _listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --------------------------------------------------------------------------- atomic_write


def test_atomic_write_replaces_file_and_creates_parents(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "out.txt"
    with tio.atomic_write(target, "w") as f:
        f.write("first")
    with tio.atomic_write(target, "w") as f:
        f.write("second")
    assert target.read_text() == "second"
    assert _listing(target.parent) == ["out.txt"]


def test_atomic_write_keeps_old_file_when_body_raises(tmp_path: Path) -> None:
    target = tmp_path / "weights.bin"
    target.write_bytes(b"old contents")
    with pytest.raises(RuntimeError, match="boom"):
        with tio.atomic_write(target) as f:
            f.write(b"new but incomplete")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"old contents"
    assert _listing(tmp_path) == ["weights.bin"]


def test_atomic_write_failure_without_old_file_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        with tio.atomic_write(tmp_path / "x.bin") as f:
            f.write(b"partial")
            raise KeyboardInterrupt
    assert _listing(tmp_path) == []


def test_atomic_write_keeps_permissions_of_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"x")
    os.chmod(target, 0o640)
    with tio.atomic_write(target) as f:
        f.write(b"y")
    assert target.stat().st_mode & 0o777 == 0o640


def test_atomic_write_rejects_read_modes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode"):
        with tio.atomic_write(tmp_path / "f", "rb"):
            pass


def test_atomic_write_error_names_the_users_path_not_the_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(dir: str, prefix: str, suffix: str) -> tuple[int, str]:
        raise PermissionError(13, "Permission denied", os.path.join(dir, prefix + "x" + suffix))

    monkeypatch.setattr(tio.tempfile, "mkstemp", refuse)
    target = tmp_path / "g.html"
    with pytest.raises(PermissionError) as info:
        with tio.atomic_write(target, "w"):
            pass
    assert info.value.filename == str(target) and ".tmp" not in str(info.value)
    assert f"cannot write {target}: cannot create a file in {tmp_path}" in str(info.value)


def test_atomic_write_names_the_part_of_the_path_that_is_not_a_folder(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    for target in (tmp_path / "afile" / "g.html", tmp_path / "afile" / "sub" / "g.html"):
        with pytest.raises(NotADirectoryError, match=f"{tmp_path / 'afile'} is not a folder"):
            with tio.atomic_write(target, "w"):
                pass
    assert _listing(tmp_path) == ["afile"]


# --------------------------------------------------------------------------- npz


def test_npz_round_trip_preserves_dtype_shape_and_name(tmp_path: Path) -> None:
    arrays = {
        "f32": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4),
        "f64": np.array([np.pi, -0.0, np.inf]),
        "f16": np.ones((2, 1, 2), np.float16),
        "i64": np.arange(5, dtype=np.int64),
        "u8": np.array([[0, 255]], np.uint8),
        "bool": np.array([True, False]),
        "scalar": np.array(3.5, np.float32),
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
    }
    path = tmp_path / "ckpt.weights"  # no .npz suffix: must not get one appended
    tio.save_npz(path, arrays)
    assert _listing(tmp_path) == ["ckpt.weights"]
    loaded = tio.load_npz(path)
    assert loaded.keys() == arrays.keys()
    for key, arr in arrays.items():
        assert loaded[key].dtype == arr.dtype and loaded[key].shape == arr.shape, key
        np.testing.assert_array_equal(loaded[key], arr)
    tio.save_npz(tmp_path / "c.npz", arrays, compressed=True)
    np.testing.assert_array_equal(tio.load_npz(tmp_path / "c.npz")["f32"], arrays["f32"])


def test_save_npz_failure_mid_write_keeps_old_archive(tmp_path, monkeypatch) -> None:
    path = tmp_path / "model.npz"
    tio.save_npz(path, {"w": np.zeros(3)})

    def broken_savez(file, **arrays):
        file.write(b"PK\x03\x04 half an archive")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        tio.save_npz(path, {"w": np.ones(3)})
    np.testing.assert_array_equal(tio.load_npz(path)["w"], np.zeros(3))
    assert _listing(tmp_path) == ["model.npz"]


def test_load_npz_refuses_object_arrays(tmp_path: Path) -> None:
    path = tmp_path / "evil.npz"
    np.savez(path, a=np.array([{"x": 1}, None], dtype=object))
    with pytest.raises(ValueError, match="evil.npz") as info:
        tio.load_npz(path)
    assert "object" in str(info.value)


def test_save_npz_refuses_object_arrays(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="object"):
        tio.save_npz(tmp_path / "o.npz", {"a": np.array([1, "x"], dtype=object)})
    assert _listing(tmp_path) == []


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04truncated"])
def test_load_npz_invalid_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="bad.npz"):
        tio.load_npz(path)


def test_load_npz_rejects_plain_npy(tmp_path: Path) -> None:
    path = tmp_path / "single.npz"
    with open(path, "wb") as f:
        np.save(f, np.arange(3))
    with pytest.raises(ValueError, match=r"single\.npz.*\.npy"):
        tio.load_npz(path)


def test_load_npz_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        tio.load_npz(tmp_path / "nope.npz")


# --------------------------------------------------------------------------- book pickle


def _book_params() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "W1": rng.standard_normal((30, 1, 5, 5)),
        "b1": np.zeros(30),
        "W2": rng.standard_normal((4320, 100)).astype(np.float32),
        "b2": np.zeros(100, np.float32),
        "W3": np.asfortranarray(rng.standard_normal((100, 10))),
        "b3": np.arange(10, dtype=np.int64),
    }


@pytest.mark.parametrize("protocol", [0, 2, 3, 4, pickle.HIGHEST_PROTOCOL])
def test_book_pickle_round_trip(tmp_path: Path, protocol: int) -> None:
    params = _book_params()
    path = tmp_path / "params.pkl"
    with open(path, "wb") as f:
        pickle.dump(params, f, protocol=protocol)
    loaded = load_book_pickle(path)
    assert loaded.keys() == params.keys()
    for key, arr in params.items():
        assert loaded[key].dtype == arr.dtype and loaded[key].shape == arr.shape
        np.testing.assert_array_equal(loaded[key], arr)


class _RunsCommand:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _CallsEval:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


class _AbusesCodecs:  # _codecs.encode is allowed only for latin1, as protocol 2 needs
    def __reduce__(self):
        return (codecs.encode, ("payload", "rot13"))


def test_malicious_pickle_is_refused_and_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "params.pkl"
    with open(path, "wb") as f:
        pickle.dump({"W1": np.zeros(2), "x": _RunsCommand(f"echo pwned > {marker}")}, f)
    with pytest.raises(ValueError, match="refusing to unpickle") as info:
        load_book_pickle(path)
    message = str(info.value)
    assert f"{os.system.__module__}.system" in message and str(path) in message
    assert "only NumPy arrays and plain containers are allowed" in message
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload, match",
    [(_CallsEval(), "builtins.eval"), (_AbusesCodecs(), "latin1")],
    ids=["eval", "codecs"],
)
def test_other_callables_are_refused(tmp_path: Path, payload: object, match: str) -> None:
    path = tmp_path / "p.pkl"
    path.write_bytes(pickle.dumps({"W1": payload}, protocol=2))
    with pytest.raises(ValueError, match=r"p\.pkl") as info:
        load_book_pickle(path)
    assert match in str(info.value)


@pytest.mark.parametrize(
    "obj, match",
    [
        ([np.zeros(2)], "expected a dict"),
        ({"W1": [1.0, 2.0]}, "str -> ndarray"),
        ({1: np.zeros(2)}, "str -> ndarray"),
        ({"W1": np.array([1, None], dtype=object)}, "object dtype"),
    ],
)
def test_book_pickle_must_be_dict_of_arrays(tmp_path: Path, obj: object, match: str) -> None:
    path = tmp_path / "p.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=2))
    with pytest.raises(ValueError, match=match):
        load_book_pickle(path)


def test_book_pickle_garbage_and_missing(tmp_path: Path) -> None:
    path = tmp_path / "junk.pkl"
    path.write_bytes(pickle.dumps({"W1": np.zeros(3)})[:-10])
    with pytest.raises(ValueError, match="junk.pkl"):
        load_book_pickle(path)
    with pytest.raises(FileNotFoundError, match="absent.pkl"):
        load_book_pickle(tmp_path / "absent.pkl")


def test_atomic_write_expands_the_home_folder(tmp_path, monkeypatch):
    from tinygrad_cnn.io import atomic_write

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    with atomic_write("~/sub/params.txt", "w") as f:
        f.write("ok")
    assert (tmp_path / "home" / "sub" / "params.txt").read_text() == "ok"
    assert not (tmp_path / "~").exists()
