"""Atomic writes of the simulator's NIfTI, JSON, TSV and text files (a crash leaves no partial file)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

try:  # ISA-L deflates at level 1 several times faster than zlib; optional
    from isal import igzip
except ImportError:  # pragma: no cover - depends on the environment
    igzip = None


def _atomic_path(path: Path) -> Path:
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
    return path.with_name(f".tmp-{os.getpid()}-{path.name[: -len(suffix)] if suffix else path.name}{suffix}")


def write_nifti(data: np.ndarray, affine: np.ndarray, path: Path, *, xform_code: int,
                tr: float | None = None) -> None:
    """Write ``data`` with ``affine`` as sform and qform (``xform_code``), units mm / s and the TR as 4th zoom."""
    img = nib.Nifti1Image(data, affine)
    hdr = img.header
    hdr.set_xyzt_units("mm", "sec")
    img.set_sform(affine, code=xform_code)
    img.set_qform(affine, code=xform_code)
    if tr is not None:
        zooms = hdr.get_zooms()
        hdr.set_zooms((*zooms[:3], tr))
    if data.dtype == np.int16:
        hdr.set_slope_inter(1.0, 0.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _atomic_path(path)
    if igzip is not None and path.name.endswith(".nii.gz"):
        tmp.write_bytes(igzip.compress(img.to_bytes(), compresslevel=1))
    else:
        nib.save(img, tmp)
    os.replace(tmp, path)


def write_text(text: str, path: Path) -> None:
    """Write ``text`` through a temporary file renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(obj: Any, path: Path) -> None:
    """Write ``obj`` as indented JSON."""
    write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", path)


def write_tsv(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` as a BIDS TSV (no index, NaN as ``n/a``)."""
    write_text(frame.to_csv(sep="\t", index=False, na_rep="n/a", lineterminator="\n"), path)
