"""Low-level readers behind :mod:`fmri_pain.bids.layout`: pybids indexing, sidecar
inheritance, TSV/JSON reading and NIfTI integrity checks.

Every reader raises :class:`Problem` (a plain message); the layout turns it into
an :class:`~fmri_pain.errors.InputError` with the subject and the file.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from fmri_pain.bids.nifti import igzip

_ISAL_ERRORS: tuple[type[Exception], ...] = ()
if igzip is not None:
    from isal.isal_zlib import error as _isal_error

    _ISAL_ERRORS = (_isal_error,)


LABEL_RE = re.compile(r"^[A-Za-z0-9]+$")
"""BIDS labels are plain alphanumerics: anything else (``..``, ``/``, ``_``) is rejected."""

#: Entities that identify a run across the raw and the derivatives trees.
RUN_KEYS = ("subject", "session", "task", "acquisition", "ceagent", "reconstruction",
            "direction", "run", "echo", "part")
_NON_ENTITIES = {"suffix", "extension", "datatype"}
NIFTI_EXT = (".nii.gz", ".nii")


class Problem(ValueError):
    """Something wrong with one file; the caller adds subject and path."""


def is_label(value: Any) -> bool:
    """True for a non-empty alphanumeric BIDS label."""
    return isinstance(value, str) and bool(LABEL_RE.match(value))


def strip_prefix(label: Any, prefix: str) -> str:
    """``"sub-01"`` -> ``"01"``; ``"01"`` -> ``"01"`` (no validation)."""
    text = str(label).strip()
    return text[len(prefix):] if text.startswith(prefix) else text


def index(root: Path, derivative: bool = False):
    """Index a BIDS (or derivatives) tree with pybids, without reading JSON.

    JSON sidecars are read lazily by :func:`sidecar_metadata`, so one broken
    sidecar cannot stop the indexing of the whole dataset.
    """
    from bids import BIDSLayout, BIDSLayoutIndexer

    kwargs: dict[str, Any] = {"validate": False,
                              "indexer": BIDSLayoutIndexer(validate=False, index_metadata=False)}
    if derivative:
        kwargs["is_derivative"] = True
        kwargs["config"] = ["bids", "derivatives"]
    return BIDSLayout(str(root), **kwargs)


def entities(bids_file) -> dict[str, Any]:
    """Entities of a pybids file without suffix/extension/datatype."""
    return {k: v for k, v in bids_file.get_entities().items() if k not in _NON_ENTITIES}


def run_key(ents: dict[str, Any]) -> tuple:
    """The entities that identify a run (same in raw data and derivatives)."""
    return tuple(_norm(ents.get(k)) for k in RUN_KEYS)


def _norm(value: Any) -> Any:
    # pybids parses run/echo to ints (``run-01`` == ``run-1``); compare their values.
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return str(value)


def expected_name(bold: Path, suffix_entities: str) -> str:
    """Derivative file name of a raw BOLD, e.g. ``..._space-X_desc-preproc_bold.nii.gz``."""
    name = bold.name
    for ext in NIFTI_EXT:
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    stem = name[: -len("_bold")] if name.endswith("_bold") else name
    return f"{stem}_{suffix_entities}"


def nearest(files: list, target_ents: dict[str, Any], target_dir: Path, root: Path) -> list[Path]:
    """Sidecars that apply to a target by the BIDS inheritance principle.

    ``files`` are pybids files of one suffix/extension. A sidecar applies when it
    lies in the target's folder or one of its parents (up to ``root``) and its
    entities are a subset of the target's. Returned from least to most specific.
    """
    target_dir = target_dir.resolve()
    root = root.resolve()
    found = []
    for f in files:
        path = Path(f.path)
        folder = path.parent.resolve()
        if folder != target_dir and folder not in target_dir.parents:
            continue
        if root != folder and root not in folder.parents:
            continue
        ents = entities(f)
        if all(k in target_ents and _norm(target_ents[k]) == _norm(v) for k, v in ents.items()):
            found.append((len(folder.parts), len(ents), path))
    return [p for *_, p in sorted(found)]


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise Problem(f"cannot read JSON sidecar: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise Problem(f"invalid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise Problem(f"JSON sidecar must hold an object, got {type(data).__name__}")
    return data


def read_tsv(path: Path, required: tuple[str, ...] = ()) -> pd.DataFrame:
    """Read a BIDS TSV (``n/a`` as missing, identifiers kept as strings)."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise Problem("empty file (0 bytes)")
        with warnings.catch_warnings():
            # index_col=False: a first row longer than the header is an error, not an index column
            warnings.simplefilter("error", pd.errors.ParserWarning)
            df = pd.read_csv(path, sep="\t", na_values=["n/a", "N/A", "NaN", "nan", ""],
                             keep_default_na=False, dtype=str, index_col=False)
    except Problem:
        raise
    except pd.errors.ParserWarning as exc:
        raise Problem("cannot read TSV: line 2 has more fields than the header") from exc
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise Problem(f"cannot read TSV: {' '.join(str(exc).split())}") from exc
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise Problem(f"missing column(s) {missing}; found {list(df.columns)}")
    return df


def plain(value: Any) -> Any:
    """A TSV cell as a plain Python value: number if numeric, None if missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            num = float(text)
        except ValueError:
            return text
        return int(num) if num.is_integer() and re.fullmatch(r"[+-]?\d+", text) else num
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass(frozen=True)
class ImageInfo:
    """What :func:`inspect_image` learned about a NIfTI file."""

    shape: tuple[int, ...]
    zooms: tuple[float, ...]
    affine: np.ndarray
    tr: float | None
    """pixdim[4] in seconds (``None`` for 3D images or when it is 0)."""
    nonfinite_volumes: tuple[int, ...] = ()
    """Indices of volumes holding NaN/inf (only with ``read_data``)."""
    n_nonfinite: int = 0

    @property
    def n_volumes(self) -> int:
        return int(np.prod(self.shape[3:])) if len(self.shape) > 3 else 1


_TIME_SCALE = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6}


def inspect_image(path: Path, level: str = "full",
                  chunk_bytes: int = 64 * 2**20) -> ImageInfo:
    """Check that a NIfTI file can be read, is complete and (optionally) finite.

    Parameters
    ----------
    path : path
    level : {"full", "quick", "header"}
        ``header``: the header only. ``quick``: header, plus completeness: the
        file size of ``.nii`` files, and for ``.nii.gz`` the uncompressed size
        stored in the gzip trailer (ISIZE); only when that disagrees is the
        stream decompressed to confirm. ``full``: stream all data volume by
        volume in one pass (memory bounded by ``chunk_bytes``), which detects
        truncated or corrupt gzip streams (length and CRC are verified at the
        end of the stream) and counts NaN/inf values.

    Raises
    ------
    Problem
        Empty, unreadable, truncated or corrupt files.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise Problem(f"cannot access image: {exc}") from exc
    if size == 0:
        raise Problem("empty image file (0 bytes)")
    try:
        img = nib.load(str(path))
        header = img.header
        shape = tuple(int(s) for s in img.shape)
        zooms = tuple(float(z) for z in header.get_zooms())
        dtype = np.dtype(header.get_data_dtype())
        offset = int(img.dataobj.offset)
        affine = np.asarray(img.affine, dtype=float)
    except Exception as exc:  # nibabel raises many types on junk input
        raise Problem(f"cannot read NIfTI header: {type(exc).__name__}: {exc}") from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise Problem(f"not a NIfTI image ({type(img).__name__})")
    if any(s <= 0 for s in shape):
        raise Problem(f"image has an empty dimension: shape {shape}")
    tr = None
    if len(shape) > 3 and len(zooms) > 3 and zooms[3] > 0:
        unit = header.get_xyzt_units()[1]
        tr = zooms[3] * _TIME_SCALE.get(unit, 1.0)
    info = ImageInfo(shape, zooms, affine, tr)
    n_values = int(np.prod(shape))
    expected = offset + n_values * dtype.itemsize
    if level == "header":
        return info
    if level == "quick":
        gz = path.name.endswith(".gz")
        if not gz:
            if size < expected:
                raise Problem(f"truncated image: {size} bytes, header needs {expected}")
            return info
        with open(path, "rb") as fh:
            fh.seek(-4, 2)
            isize = int.from_bytes(fh.read(4), "little")
        if isize == expected % 2**32:
            return info
    return _stream(path, info, dtype, offset, check_finite=level == "full",
                   chunk_bytes=chunk_bytes)


def _stream(path: Path, info: ImageInfo, dtype: np.dtype, offset: int, check_finite: bool,
            chunk_bytes: int) -> ImageInfo:
    shape = info.shape
    vol_values = int(np.prod(shape[:3]))
    n_vol = info.n_volumes
    vol_bytes = vol_values * dtype.itemsize
    per_chunk = max(1, chunk_bytes // max(vol_bytes, 1))
    check_finite = check_finite and dtype.kind in "fc"
    bad: list[int] = []
    n_bad = 0
    try:
        with _open_stream(path) as fobj:
            fobj.seek(offset)
            for start in range(0, n_vol, per_chunk):
                k = min(per_chunk, n_vol - start)
                buf = fobj.read(k * vol_bytes)
                if len(buf) < k * vol_bytes:
                    done = start + len(buf) // vol_bytes
                    raise Problem(
                        f"truncated image: data end after {done} of {n_vol} volumes "
                        f"(header shape {shape})")
                if check_finite:
                    arr = np.frombuffer(buf, dtype=dtype).reshape(k, vol_values)
                    counts = np.count_nonzero(~np.isfinite(arr), axis=1)
                    n_bad += int(counts.sum())
                    bad.extend(int(start + i) for i in np.flatnonzero(counts))
            fobj.read(1)  # reach end of stream: gzip verifies length and CRC here
    except Problem:
        raise
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, *_ISAL_ERRORS) as exc:
        raise Problem(f"truncated or corrupt compressed image: {type(exc).__name__}: {exc}") from exc
    return ImageInfo(shape, info.zooms, info.affine, info.tr, tuple(bad), n_bad)


def _open_stream(path: Path):
    """A binary reader of the image's bytes (ISA-L for ``.nii.gz`` when installed: the full check
    inflates the whole file, two to three times faster than zlib)."""
    if igzip is not None and path.name.endswith(".gz"):
        return igzip.open(path, "rb")
    return nib.openers.ImageOpener(str(path), "rb")


def load_mask(path: Path) -> np.ndarray:
    """A 3D mask as a boolean array."""
    try:
        data = np.asanyarray(nib.load(str(path)).dataobj)
    except Exception as exc:
        raise Problem(f"cannot read mask: {type(exc).__name__}: {exc}") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise Problem(f"mask must be 3D, got shape {data.shape}")
    data = np.nan_to_num(data)
    return data > 0
