"""Load, validate and save spin data.

Spins are float32 arrays of exactly ±1 with shape [num_samples, n]. On disk they may be
stored as ±1 (`encoding='pm1'`) or as 0/1 (`encoding='01'`, mapped to ±1 by s = 2x - 1) in
`.npy`, `.npz`, `.txt`/`.csv`/`.dat` (one sample per line) or `.mat` files. Every problem is
reported as an error naming the source, what was wrong, where, and what is allowed.
"""

import json
import os
import threading
import warnings
import zipfile
from pathlib import Path

import numpy as np
import scipy.io

ENCODINGS = ("pm1", "01")
SUPPORTED_SUFFIXES = (".npy", ".npz", ".txt", ".csv", ".dat", ".mat")
_ALLOWED = {"pm1": (-1, 1), "01": (0, 1)}
_ALLOWED_TEXT = {"pm1": "-1 or +1", "01": "0 or 1"}
_HINT = {"pm1": "use encoding='01' for 0/1 data", "01": "use encoding='pm1' for -1/+1 data"}

PathLike = str | os.PathLike[str]


def _check_encoding(encoding: str) -> None:
    if encoding not in ENCODINGS:
        raise ValueError(
            f"unknown encoding {encoding!r}; expected 'pm1' (entries -1/+1) or '01' (entries 0/1)"
        )


def _first(mask: np.ndarray) -> tuple[int, int]:
    """Returns the (row, column) of the first True entry of a 2-D mask, in row-major order."""
    row, col = np.unravel_index(int(np.argmax(mask)), mask.shape)
    return int(row), int(col)


def validate_spins(array, *, encoding: str = "pm1", source: str = "array") -> np.ndarray:
    """Checks spin data and returns it as float32 ±1 spins.

    Args:
      array: array-like [num_samples, n] of numbers (bools allowed with `encoding='01'`).
      encoding: 'pm1' if entries are exactly -1/+1, '01' if exactly 0/1 (mapped to 2x - 1).
      source: name of where the data came from (a file path), used in error messages.

    Returns:
      Spins [num_samples, n], float32, every entry exactly -1 or +1.

    Raises:
      ValueError: if the encoding is unknown, or the data is not numeric, not 2-D, has no
        samples or fewer than 2 columns, holds a non-finite entry or an entry outside the
        encoding's two values. The message names the first offending entry's [row, column].
    """
    _check_encoding(encoding)
    try:
        x = np.asarray(array)
    except ValueError as e:  # Ragged nested sequences.
        raise ValueError(f"{source}: cannot be read as a 2-D numeric array ({e})") from e
    if x.dtype.kind not in "biuf":
        raise ValueError(
            f"{source}: entries have non-numeric dtype {x.dtype}; expected real numbers "
            "(bool, integer or float)"
        )
    if x.ndim != 2:
        raise ValueError(
            f"{source}: spins have shape {x.shape} ({x.ndim}-D); expected a 2-D array "
            "[num_samples, n] with one sample per row (a single sample is [1, n])"
        )
    if x.shape[0] < 1:
        raise ValueError(f"{source}: no samples (shape {x.shape}); at least one row is needed")
    if x.shape[1] < 2:
        raise ValueError(
            f"{source}: n = {x.shape[1]} spin column(s) (shape {x.shape}); at least 2 spins "
            "(columns) are needed"
        )
    low, high = _ALLOWED[encoding]
    allowed = f"with encoding={encoding!r} every entry must be exactly {_ALLOWED_TEXT[encoding]}"
    if x.dtype.kind == "f" and not np.all(finite := np.isfinite(x)):
        row, col = _first(~finite)
        raise ValueError(f"{source}: entry [{row}, {col}] is {x[row, col]}, not finite; {allowed}")
    bad = (x != low) & (x != high)
    if np.any(bad):
        row, col = _first(bad)
        raise ValueError(
            f"{source}: entry [{row}, {col}] is {x[row, col]}; {allowed} ({_HINT[encoding]})"
        )
    if encoding == "01":
        return 2 * x.astype(np.float32) - 1
    return x.astype(np.float32)


def _pick(names: list[str], name: str | None, path: Path, kind: str) -> str:
    """Returns `name`, or the only name when `name` is None."""
    names = sorted(names)
    if name is None:
        if len(names) == 1:
            return names[0]
        raise ValueError(f"{path}: holds {len(names)} {kind}s {names}; pass name=... to choose one")
    if name not in names:
        raise ValueError(f"{path}: no {kind} named {name!r}; available: {names}")
    return name


def _text_error(lines: list[str], delimiter: str | None) -> str:
    """Describes the first malformed line of a text table (1-based line numbers)."""
    width = None
    for number, line in enumerate(lines, start=1):
        fields = [field.strip() for field in line.split("#", 1)[0].split(delimiter)]
        if not any(fields):
            continue
        for field in fields:
            try:
                float(field)
            except ValueError:
                return f"line {number}: {field!r} is not a number"
        if width is not None and len(fields) != width:
            return f"line {number} has {len(fields)} values but earlier lines have {width}"
        width = len(fields)
    return "malformed table"


def _read_text(path: Path) -> np.ndarray:
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a text file ({e})") from e
    delimiter = "," if any("," in line for line in lines) else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # Empty file: reported as no samples.
            return np.loadtxt(lines, delimiter=delimiter, ndmin=2)
    except ValueError as e:
        raise ValueError(
            f"{path}: {_text_error(lines, delimiter)}; expected one sample per line, "
            "the same number of numbers on every line, separated by whitespace or commas"
        ) from e


def _read(path: Path, suffix: str, name: str | None):
    if suffix in (".txt", ".csv", ".dat"):
        return _read_text(path)
    if suffix == ".mat":
        try:
            contents = scipy.io.loadmat(path)
        except (NotImplementedError, ValueError, OSError) as e:  # v7.3 (HDF5) or corrupt.
            raise ValueError(f"{path}: cannot be read as a MAT-file ({e})") from e
        variables = [k for k in contents if not k.startswith("__")]
        return contents[_pick(variables, name, path, "variable")]
    unreadable = f"{path}: cannot be read as {suffix}"
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"{unreadable} ({e})") from e
    if suffix == ".npy":
        return archive
    with archive:
        key = _pick(archive.files, name, path, "array")
        try:
            return archive[key]
        except (ValueError, OSError) as e:  # E.g. a pickled object array.
            raise ValueError(f"{unreadable} ({e})") from e


def _check_path(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise ValueError(
            f"{path}: unsupported file extension {suffix or '(none)'!r}; supported: "
            + ", ".join(SUPPORTED_SUFFIXES)
        )
    return suffix


def load_spins(path: PathLike, *, encoding: str = "pm1", name: str | None = None) -> np.ndarray:
    """Loads spin data from a file and validates it.

    Args:
      path: a `.npy`, `.npz`, `.txt`/`.csv`/`.dat` (one sample per line, numbers separated by
        whitespace or commas) or `.mat` file holding a [num_samples, n] table.
      encoding: 'pm1' if the file stores -1/+1, '01' if it stores 0/1.
      name: the array (`.npz`) or variable (`.mat`) to read; may be omitted when the file
        holds exactly one.

    Returns:
      Spins [num_samples, n], float32, every entry exactly -1 or +1.

    Raises:
      FileNotFoundError: if the file does not exist.
      ValueError: for an unknown extension or encoding, an unreadable or malformed file, an
        ambiguous or missing `name`, or data that fails `validate_spins`.
    """
    path = Path(path)
    _check_encoding(encoding)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    suffix = _check_path(path)
    return validate_spins(_read(path, suffix, name), encoding=encoding, source=str(path))


def save_spins(path: PathLike, spins, *, encoding: str = "pm1", name: str = "spins") -> None:
    """Writes ±1 spins to a file that `load_spins` reads back unchanged.

    Args:
      path: destination; its extension (`.npy`, `.npz`, `.txt`, `.csv`, `.dat`, `.mat`)
        picks the format. Text files hold integers separated by spaces (commas for `.csv`).
      spins: ±1 spins [num_samples, n].
      encoding: 'pm1' writes -1/+1, '01' writes 0/1.
      name: the array (`.npz`) or variable (`.mat`) name.

    Raises:
      FileNotFoundError: if the parent directory does not exist.
      ValueError: for an unknown extension or encoding, an invalid `.mat` variable name, or
        spins that fail `validate_spins`.
    """
    path = Path(path)
    _check_encoding(encoding)
    x = validate_spins(spins, encoding="pm1", source="spins")
    suffix = _check_path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: parent directory {path.parent} does not exist")
    data = (x if encoding == "pm1" else (x + 1) / 2).astype(np.int8)
    if suffix == ".npy":
        with path.open("wb") as f:
            np.save(f, data)
    elif suffix == ".npz":  # Written directly: savez(**{name: ...}) breaks for name='file'.
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            with archive.open(f"{name}.npy", "w") as f:
                np.lib.format.write_array(f, data)
    elif suffix == ".mat":
        if not name.isidentifier() or name.startswith("_"):
            raise ValueError(
                f"{path}: {name!r} is not a valid MAT-file variable name; use letters, digits "
                "and underscores, starting with a letter"
            )
        scipy.io.savemat(path, {name: data})
    else:
        np.savetxt(path, data, fmt="%d", delimiter="," if suffix == ".csv" else " ")


def write_config(workdir: PathLike, config) -> Path:
    """Writes `config` (a ConfigDict) to workdir/config.json; returns the path."""
    path = Path(workdir) / "config.json"
    path.write_text(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")
    return path


_APPEND_LOCK = threading.Lock()


def append_jsonl(path: PathLike, record: dict) -> None:
    """Appends one JSON object as a line and flushes it to disk (a finished result is kept).

    If an interrupted write left a partial last line, the record starts on a new line so
    only the partial one is lost (read_jsonl skips it and a rerun recomputes that cell).
    """
    with _APPEND_LOCK:  # one line at a time from threads (runtime.run_concurrently)
        partial = False
        if Path(path).exists() and Path(path).stat().st_size > 0:
            with open(path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                partial = f.read(1) != b"\n"
        with open(path, "a") as f:
            f.write(("\n" if partial else "") + json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())


def read_jsonl(path: PathLike) -> list[dict]:
    """Reads the JSON objects of a .jsonl file; [] if it does not exist.

    A last line cut short by an interrupted write is ignored (it is recomputed on resume).
    """
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


# --- Spike rasters (the salamander retina recordings and plain [samples, neurons] tables) ---

RETINA_FILE = "bint_fishmovie32_100.mat"
RETINA_VARIABLE = "bint"
DATA_ENV = "ISINGJAX_DATA"
RETINA_SOURCE = (
    "Download it from the IST Austria data repository (dataset 'Multi-electrode array "
    "recording from salamander retinal ganglion cells', DOI 10.15479/AT:ISTA:61; published "
    f"as IST-2017-61-v1+1_{RETINA_FILE}; also listed on figshare, item 5009840) and follow "
    "its terms. Cite the dataset and Tkačik G, Marre O, Amodei D, Schneidman E, Bialek W, "
    "Berry MJ II, 'Searching for collective behavior in a large network of sensory neurons', "
    "PLoS Comput Biol 10(1): e1003408 (2014)."
)


def retina_path(path: PathLike | None = None) -> Path:
    """Where the retina raster is: `path` when given (non-empty), else
    $ISINGJAX_DATA/bint_fishmovie32_100.mat.

    Raises:
      FileNotFoundError: naming the place looked at, how to point there, where to
        download the file and how to cite it.
    """
    if path:
        where = Path(path)
        how = "the path given in the config (config.data.path)"
    elif os.environ.get(DATA_ENV):
        where = Path(os.environ[DATA_ENV]) / RETINA_FILE
        how = f"${DATA_ENV}/{RETINA_FILE}"
    else:
        raise FileNotFoundError(
            f"no retina data file: config.data.path is empty and ${DATA_ENV} is not set; set "
            f"one of them (${DATA_ENV} names the folder holding {RETINA_FILE}). " + RETINA_SOURCE
        )
    if not where.exists():
        raise FileNotFoundError(f"{where}: no such file ({how}). " + RETINA_SOURCE)
    return where


def load_raster(
    path: PathLike, *, name: str | None = None, bins_per_repeat: int | None = None
) -> np.ndarray:
    """Loads a binary spike raster as ±1 spins [num_repeats, num_bins, num_neurons] (int8).

    Two layouts are read:
      * the published retina layout: a 3-D array [repeats, neurons, bins] (the .mat
        variable `bint` of Tkačik et al. 2014), entry 1 when the neuron spiked in the bin;
      * a plain 2-D raster [samples, neurons] (.mat, .npy or .npz). Its rows are cut into
        repeats of `bins_per_repeat` consecutive samples (default 1: every sample is its
        own repeat), so splits by repeat never separate the bins of one repeat.
    Entries must be all 0/1 (mapped to s = 2x - 1) or all -1/+1; the encoding is read
    from the data (a negative entry means -1/+1).

    Args:
      path: a .mat, .npy or .npz file.
      name: the .mat variable or .npz array; default `bint` when present, else the only one.
      bins_per_repeat: for 2-D rasters, samples per repeat (must divide the sample count).

    Raises:
      FileNotFoundError: the file does not exist.
      ValueError: unsupported extension, unreadable file, missing or ambiguous variable,
        non-numeric, empty, wrong number of dimensions, a NaN/inf entry, an entry not in
        {0, 1} / {-1, 1}, or a bins_per_repeat that does not divide the samples.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    suffix = _check_path(path)
    if suffix not in (".mat", ".npy", ".npz"):
        raise ValueError(f"{path}: spike rasters are read from .mat, .npy or .npz, not {suffix}")
    if name is None and suffix in (".mat", ".npz"):
        name = _default_raster_name(path, suffix)
    x = np.asarray(_read(path, suffix, name))
    where = f"{path}" + (f" (variable {name!r})" if name else "")
    if x.dtype.kind not in "biuf":
        raise ValueError(f"{where}: entries have non-numeric dtype {x.dtype}; expected 0/1 or ±1")
    if x.size == 0:
        raise ValueError(f"{where}: the raster is empty (shape {x.shape})")
    if x.ndim == 3:
        rows = x.transpose(0, 2, 1).reshape(-1, x.shape[1])  # [repeats * bins, neurons]
        source = f"{where} [repeats, neurons, bins] read as rows repeat * {x.shape[2]} + bin"
        shape = (x.shape[0], x.shape[2], x.shape[1])
    elif x.ndim == 2:
        per = 1 if bins_per_repeat is None else bins_per_repeat
        if not isinstance(per, int | np.integer) or per < 1 or x.shape[0] % per:
            raise ValueError(
                f"{where}: bins_per_repeat must be an integer >= 1 dividing the "
                f"{x.shape[0]} samples, got {bins_per_repeat!r}"
            )
        rows, source, shape = x, where, (x.shape[0] // per, per, x.shape[1])
    else:
        raise ValueError(
            f"{where}: the raster has shape {x.shape} ({x.ndim}-D); expected 3-D [repeats, "
            "neurons, bins] (the published retina layout) or 2-D [samples, neurons]"
        )
    negative = x.dtype.kind in "if" and bool(np.any(np.nan_to_num(rows) < 0))
    spins = validate_spins(rows, encoding="pm1" if negative else "01", source=source)
    return spins.astype(np.int8).reshape(shape)


def _default_raster_name(path: Path, suffix: str) -> str | None:
    """`bint` when the file holds it, else None (the only variable is read)."""
    if suffix == ".mat":
        try:
            names = [n for n, _, _ in scipy.io.whosmat(path)]
        except (NotImplementedError, ValueError, OSError) as e:
            raise ValueError(f"{path}: cannot be read as a MAT-file ({e})") from e
    else:
        try:
            with np.load(path, allow_pickle=False) as archive:
                names = list(archive.files)
        except (ValueError, OSError, EOFError) as e:
            raise ValueError(f"{path}: cannot be read as {suffix} ({e})") from e
    return RETINA_VARIABLE if RETINA_VARIABLE in names else None
