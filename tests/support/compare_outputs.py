"""Compare two output folders of the pipeline, file by file: every NIfTI and TSV, numerically.

Used to show that a refactoring changed no result::

    python -m tests.support.compare_outputs BEFORE AFTER [--atol 1e-5]

prints, per kind of file, how many were compared and the largest absolute difference,
and lists files present in only one folder or differing in shape, columns or text cells.
Exit status 0 when both folders hold the same files and every numerical difference is
at most ``--atol`` (default 0: identical), 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

KINDS = ("*.nii.gz", "*.nii", "*.tsv")


def _files(root: Path) -> set[Path]:
    return {p.relative_to(root) for kind in KINDS for p in root.rglob(kind)}


def _nifti_difference(a: Path, b: Path) -> float:
    ia, ib = nib.load(a), nib.load(b)
    if ia.shape != ib.shape or not np.allclose(ia.affine, ib.affine, atol=0, rtol=0):
        return np.inf
    da, db = np.asanyarray(ia.dataobj), np.asanyarray(ib.dataobj)
    both_nan = np.isnan(da) & np.isnan(db) if da.dtype.kind == "f" else False
    diff = np.abs(da.astype(float) - db.astype(float))
    return float(np.nanmax(np.where(both_nan, 0.0, diff))) if diff.size else 0.0


def _tsv_difference(a: Path, b: Path) -> float:
    ta = pd.read_csv(a, sep="\t", dtype=str, keep_default_na=False)
    tb = pd.read_csv(b, sep="\t", dtype=str, keep_default_na=False)
    if list(ta.columns) != list(tb.columns) or ta.shape != tb.shape:
        return np.inf
    worst = 0.0
    for column in ta.columns:
        na, nb = pd.to_numeric(ta[column], errors="coerce"), pd.to_numeric(tb[column], errors="coerce")
        numeric = na.notna() & nb.notna()
        if (ta[column][~numeric] != tb[column][~numeric]).any():
            return np.inf
        if numeric.any():
            worst = max(worst, float(np.abs(na[numeric] - nb[numeric]).max()))
    return worst


def compare(before: Path, after: Path, atol: float = 0.0) -> dict[str, tuple[int, float]]:
    """Per kind (``nifti``, ``tsv``): number of files compared and largest difference.

    Prints the files found in one folder only and those differing by more than ``atol``.
    """
    fa, fb = _files(before), _files(after)
    for only, where in ((fa - fb, before), (fb - fa, after)):
        for rel in sorted(only):
            print(f"only in {where}: {rel}")
    summary: dict[str, tuple[int, float]] = {}
    for rel in sorted(fa & fb):
        kind = "tsv" if rel.suffix == ".tsv" else "nifti"
        diff = (_tsv_difference if kind == "tsv" else _nifti_difference)(before / rel, after / rel)
        if diff > atol:
            print(f"differs by {diff:g}: {rel}")
        n, worst = summary.get(kind, (0, 0.0))
        summary[kind] = (n + 1, max(worst, diff))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--atol", type=float, default=0.0,
                        help="largest absolute difference still counted as equal (default 0)")
    args = parser.parse_args(argv)
    summary = compare(args.before, args.after, args.atol)
    for kind, (n, worst) in summary.items():
        print(f"{kind}: {n} files compared, largest absolute difference {worst:g}")
    same = (_files(args.before) == _files(args.after) and bool(summary)
            and all(w <= args.atol for _, w in summary.values()))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
