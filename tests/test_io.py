"""Tests for isingjax.io: spin validation, loading and saving."""

import re

import numpy as np
import pytest
import scipy.io

from isingjax import io

FORMATS = (".npy", ".npz", ".txt", ".csv", ".dat", ".mat")
SPINS = np.array([[1, -1, 1, 1], [-1, -1, 1, -1], [1, 1, -1, -1]], dtype=np.float32)


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize("encoding", io.ENCODINGS)
def test_round_trip(tmp_path, suffix, encoding):
    path = tmp_path / f"spins{suffix}"
    io.save_spins(path, SPINS, encoding=encoding)
    loaded = io.load_spins(path, encoding=encoding)
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, SPINS)


@pytest.mark.parametrize("suffix", [".npz", ".mat"])
def test_round_trip_named(tmp_path, suffix):
    path = tmp_path / f"data{suffix}"
    io.save_spins(path, SPINS, name="raster")
    np.testing.assert_array_equal(io.load_spins(path, name="raster"), SPINS)


def test_save_01_writes_zeros_and_ones(tmp_path):
    path = tmp_path / "s.csv"
    io.save_spins(path, SPINS, encoding="01")
    assert path.read_text().splitlines()[0] == "1,0,1,1"


def test_single_line_text_is_one_sample(tmp_path):
    path = tmp_path / "one.txt"
    path.write_text("1 -1 -1\n")
    np.testing.assert_array_equal(io.load_spins(path), [[1, -1, -1]])


def test_text_comma_with_spaces_and_comments(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("# header\n1, -1\n\n-1, 1\n")
    np.testing.assert_array_equal(io.load_spins(path), [[1, -1], [-1, 1]])


@pytest.mark.parametrize(
    ("array", "encoding", "expected"),
    [
        ([[1, -1], [-1, 1]], "pm1", [[1, -1], [-1, 1]]),
        (np.array([[1.0, -1.0]], dtype=np.float64), "pm1", [[1, -1]]),
        (np.array([[0, 1], [1, 0]], dtype=np.uint8), "01", [[-1, 1], [1, -1]]),
        (np.array([[True, False]]), "01", [[1, -1]]),
    ],
)
def test_validate_accepts(array, encoding, expected):
    spins = io.validate_spins(array, encoding=encoding)
    assert spins.dtype == np.float32
    np.testing.assert_array_equal(spins, expected)


GOOD = np.ones((4, 3))


def _with(value, row=2, col=1):
    out = GOOD.copy()
    out[row, col] = value
    return out


@pytest.mark.parametrize(
    ("array", "encoding", "match"),
    [
        (
            np.ones(5),
            "pm1",
            r"array: spins have shape \(5,\) \(1-D\); expected .*\[num_samples, n\]",
        ),
        (np.ones((2, 3, 4)), "pm1", r"shape \(2, 3, 4\) \(3-D\); expected .*\[num_samples, n\]"),
        (np.ones((5, 1)), "pm1", r"n = 1 spin column.*at least 2 spins"),
        (np.ones((0, 3)), "pm1", r"no samples .*at least one row"),
        (_with(np.nan), "pm1", r"entry \[2, 1\] is nan, not finite; .*exactly -1 or \+1"),
        (_with(-np.inf, 0, 2), "pm1", r"entry \[0, 2\] is -inf, not finite"),
        (_with(0.5), "pm1", r"entry \[2, 1\] is 0.5; with encoding='pm1' .*-1 or \+1.*'01'"),
        (_with(-1.0, 3, 0), "01", r"entry \[3, 0\] is -1.0; with encoding='01' .*exactly 0 or 1"),
        (_with(2.0, 1, 2), "pm1", r"entry \[1, 2\] is 2.0;"),
        (np.array([[1, 2], [0, 1]]), "01", r"entry \[0, 1\] is 2; .*exactly 0 or 1"),
        (np.array([["1", "-1"], ["a", "1"]]), "pm1", r"non-numeric dtype <U\d+; expected real"),
        (np.array([[1, None]], dtype=object), "pm1", r"non-numeric dtype object"),
        ([[1, -1], [1]], "pm1", r"cannot be read as a 2-D numeric array"),
        (GOOD, "binary", r"unknown encoding 'binary'; expected 'pm1' .* or '01'"),
    ],
)
def test_validate_rejects(array, encoding, match):
    with pytest.raises(ValueError, match=match):
        io.validate_spins(array, encoding=encoding)


def test_validate_reports_first_offending_entry_and_source():
    array = np.ones((3, 4))
    array[2, 0] = 0.0
    array[1, 3] = 0.0
    with pytest.raises(ValueError, match=re.escape("spins.npy: entry [1, 3] is 0.0;")):
        io.validate_spins(array, source="spins.npy")


def test_load_missing_file(tmp_path):
    path = tmp_path / "absent.npy"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        io.load_spins(path)


@pytest.mark.parametrize("function", ["load", "save"])
def test_unknown_extension(tmp_path, function):
    path = tmp_path / "spins.h5"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"spins.h5: unsupported file extension '.h5'.*\.npz"):
        if function == "load":
            io.load_spins(path)
        else:
            io.save_spins(path, SPINS)


def test_save_missing_parent_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"parent directory .*nowhere does not exist"):
        io.save_spins(tmp_path / "nowhere" / "s.npy", SPINS)


def test_save_rejects_invalid_spins(tmp_path):
    with pytest.raises(ValueError, match=r"spins: entry \[0, 0\] is 0"):
        io.save_spins(tmp_path / "s.npy", np.zeros((2, 3)))


def test_load_reports_file_in_validation_error(tmp_path):
    path = tmp_path / "bad.npy"
    np.save(path, _with(0.5))
    with pytest.raises(ValueError, match=r"bad.npy: entry \[2, 1\] is 0.5"):
        io.load_spins(path)


def _write_npz(path, **arrays):
    np.savez(path, **arrays)


def _write_mat(path, **arrays):
    scipy.io.savemat(path, arrays)


@pytest.mark.parametrize(
    ("suffix", "write", "kind"), [(".npz", _write_npz, "array"), (".mat", _write_mat, "variable")]
)
def test_load_named_arrays(tmp_path, suffix, write, kind):
    path = tmp_path / f"many{suffix}"
    write(path, a=SPINS, b=-SPINS)
    np.testing.assert_array_equal(io.load_spins(path, name="b"), -SPINS)
    with pytest.raises(ValueError, match=rf"holds 2 {kind}s \['a', 'b'\]; pass name="):
        io.load_spins(path)
    with pytest.raises(ValueError, match=rf"no {kind} named 'c'; available: \['a', 'b'\]"):
        io.load_spins(path, name="c")


def test_load_single_array_without_name(tmp_path):
    path = tmp_path / "one.mat"
    _write_mat(path, whatever=SPINS)
    np.testing.assert_array_equal(io.load_spins(path), SPINS)


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("ragged.txt", "1 -1 1\n-1 1 1\n\n1 -1\n", r"line 4 has 2 values but earlier lines have 3"),
        ("words.csv", "1,-1\n# note\n1,a\n", r"line 3: 'a' is not a number"),
        ("column.dat", "1\n-1\n1\n", r"n = 1 spin column"),
        ("empty.txt", "", r"no samples"),
    ],
)
def test_load_bad_text(tmp_path, name, text, match):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"{re.escape(name)}: {match}"):
        io.load_spins(path)


def test_load_corrupt_binary(tmp_path):
    path = tmp_path / "junk.npy"
    path.write_bytes(b"not an array")
    with pytest.raises(ValueError, match=r"junk.npy: cannot be read as .npy"):
        io.load_spins(path)


def test_append_after_a_partial_line_keeps_the_new_record(tmp_path):
    path = tmp_path / "results.jsonl"
    io.append_jsonl(path, {"cell": 0})
    with open(path, "a") as f:
        f.write('{"cell": 1, "va')  # a write cut short by a kill
    io.append_jsonl(path, {"cell": 2})
    assert io.read_jsonl(path) == [{"cell": 0}, {"cell": 2}]


# --- Spike rasters ---


def _published(rng, repeats=4, neurons=5, bins=7):
    """A raster in the published retina layout [repeats, neurons, bins], uint8 0/1."""
    return (rng.random((repeats, neurons, bins)) < 0.3).astype(np.uint8)


def test_load_raster_published_layout_round_trips(tmp_path):
    bint = _published(np.random.default_rng(0))
    scipy.io.savemat(tmp_path / "r.mat", {"bint": bint, "other": np.zeros(3)})
    spins = io.load_raster(tmp_path / "r.mat")  # 'bint' is chosen among two variables
    assert spins.shape == (4, 7, 5) and spins.dtype == np.int8
    for r in range(4):
        for t in range(7):
            np.testing.assert_array_equal(spins[r, t], 2 * bint[r, :, t].astype(int) - 1)


@pytest.mark.parametrize("pm1", [False, True])
@pytest.mark.parametrize("suffix", [".npy", ".npz", ".mat"])
def test_load_raster_plain_rasters(tmp_path, suffix, pm1):
    x = (np.random.default_rng(1).random((6, 3)) < 0.5).astype(np.int8)
    stored = 2 * x - 1 if pm1 else x
    path = tmp_path / f"r{suffix}"
    if suffix == ".npy":
        np.save(path, stored)
    elif suffix == ".npz":
        _write_npz(path, spikes=stored)
    else:
        _write_mat(path, spikes=stored.astype(np.float64))
    spins = io.load_raster(path)
    np.testing.assert_array_equal(spins, (2 * x - 1)[:, None, :])  # a repeat per sample
    blocks = io.load_raster(path, bins_per_repeat=2)
    np.testing.assert_array_equal(blocks.reshape(6, 3), 2 * x - 1)
    assert blocks.shape == (3, 2, 3)


def _nan_raster():
    x = np.zeros((2, 3, 4))
    x[1, 2, 3] = np.nan
    return x


@pytest.mark.parametrize(
    "array, kwargs, match",
    [
        (np.zeros(5), {}, r"1-D\); expected 3-D \[repeats, neurons, bins\]"),
        (np.zeros((2, 2, 2, 2)), {}, "4-D"),
        (np.full((2, 3, 4), 2, np.uint8), {}, "is 2; with encoding='01' every entry"),
        (np.array([[0, 1], [-1, 1]]), {}, r"entry \[0, 0\] is 0; with encoding='pm1'"),
        (_nan_raster(), {}, "is nan, not finite"),
        (np.zeros((0, 160, 953)), {}, "empty"),
        (
            np.zeros((4, 3)),
            {"bins_per_repeat": 3},
            "bins_per_repeat must be an integer >= 1 dividing",
        ),
        (np.zeros((2, 3)), {"name": "nope"}, "no variable named 'nope'"),
    ],
)
def test_load_raster_rejects(tmp_path, array, kwargs, match):
    # .mat keeps at least 2 dimensions, so the layouts are tested as .npy; names as .mat
    path = tmp_path / ("bad.mat" if "name" in kwargs else "bad.npy")
    if "name" in kwargs:
        _write_mat(path, bint=array)
    else:
        np.save(path, array)
    with pytest.raises(ValueError, match=match):
        io.load_raster(path, **kwargs)


def test_load_raster_ambiguous_and_unsupported(tmp_path):
    _write_mat(tmp_path / "two.mat", a=np.zeros((2, 2)), b=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="holds 2 variables"):
        io.load_raster(tmp_path / "two.mat")
    (tmp_path / "r.txt").write_text("0 1\n")
    with pytest.raises(ValueError, match="read from .mat, .npy or .npz"):
        io.load_raster(tmp_path / "r.txt")
    with pytest.raises(FileNotFoundError, match="no such file"):
        io.load_raster(tmp_path / "absent.mat")


def test_retina_path_says_where_to_get_the_data(tmp_path, monkeypatch):
    monkeypatch.delenv(io.DATA_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match="ISINGJAX_DATA is not set") as error:
        io.retina_path("")
    for needed in ("10.15479/AT:ISTA:61", "5009840", "e1003408", "Tkačik"):
        assert needed in str(error.value)
    monkeypatch.setenv(io.DATA_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / io.RETINA_FILE))):
        io.retina_path(None)
    (tmp_path / io.RETINA_FILE).write_bytes(b"")
    assert io.retina_path("") == tmp_path / io.RETINA_FILE
    with pytest.raises(FileNotFoundError, match="config.data.path.*IST Austria"):
        io.retina_path(tmp_path / "elsewhere.mat")
