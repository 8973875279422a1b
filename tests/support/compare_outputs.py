"""Compare two output folders of the pipeline, file by file: every NIfTI and TSV, numerically.

Used to show that a refactoring changed no result::

    python -m tests.support.compare_outputs BEFORE AFTER [--atol 1e-5] [--exclude 'logs/*']
        [--path-alias /out=/data/run-2/out]

prints, per kind of file, how many were compared and the largest absolute difference,
and lists files present in only one folder or differing in shape, columns or text cells.
Exit status 0 when both folders hold the same files and every numerical difference is
at most ``--atol`` (default 0: identical), 1 otherwise. ``--exclude`` drops files by a
glob of their relative path (run logs hold times); ``--path-alias AFTER_PREFIX=BEFORE_PREFIX``
reads absolute paths recorded in AFTER's tables as if written under BEFORE's folder
(a container writes ``/out/...`` where the host run wrote its own folder).
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

KINDS = ("*.nii.gz", "*.nii", "*.tsv")


def _files(root: Path, exclude: tuple[str, ...] = ()) -> set[Path]:
    found = {p.relative_to(root) for kind in KINDS for p in root.rglob(kind)}
    return {rel for rel in found if not any(fnmatch.fnmatch(rel.as_posix(), pat) for pat in exclude)}


def _nifti_difference(a: Path, b: Path) -> float:
    ia, ib = nib.load(a), nib.load(b)
    if ia.shape != ib.shape or not np.allclose(ia.affine, ib.affine, atol=0, rtol=0):
        return np.inf
    da, db = np.asanyarray(ia.dataobj), np.asanyarray(ib.dataobj)
    both_nan = np.isnan(da) & np.isnan(db) if da.dtype.kind == "f" else False
    diff = np.abs(da.astype(float) - db.astype(float))
    return float(np.nanmax(np.where(both_nan, 0.0, diff))) if diff.size else 0.0


def _tsv_difference(a: Path, b: Path, aliases: tuple[tuple[str, str], ...] = ()) -> float:
    ta = pd.read_csv(a, sep="\t", dtype=str, keep_default_na=False)
    tb = pd.read_csv(b, sep="\t", dtype=str, keep_default_na=False)
    for after_prefix, before_prefix in aliases:
        tb = tb.map(lambda cell, old=after_prefix.rstrip("/") + "/", new=before_prefix.rstrip("/") + "/":
                    new + cell[len(old):] if cell.startswith(old) else cell)
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


def compare(before: Path, after: Path, atol: float = 0.0, exclude: tuple[str, ...] = (),
            aliases: tuple[tuple[str, str], ...] = ()) -> dict[str, tuple[int, float]]:
    """Per kind (``nifti``, ``tsv``): number of files compared and largest difference.

    Prints the files found in one folder only and those differing by more than ``atol``.
    ``exclude``: globs of relative paths left out; ``aliases``: (after prefix, before
    prefix) pairs of absolute paths in AFTER's table cells.
    """
    fa, fb = _files(before, exclude), _files(after, exclude)
    for only, where in ((fa - fb, before), (fb - fa, after)):
        for rel in sorted(only):
            print(f"only in {where}: {rel}")
    summary: dict[str, tuple[int, float]] = {}
    for rel in sorted(fa & fb):
        kind = "tsv" if rel.suffix == ".tsv" else "nifti"
        if kind == "tsv":
            diff = _tsv_difference(before / rel, after / rel, aliases)
        else:
            diff = _nifti_difference(before / rel, after / rel)
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
    parser.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                        help="leave out files whose relative path matches (repeatable)")
    parser.add_argument("--path-alias", action="append", default=[], metavar="AFTER=BEFORE",
                        help="absolute-path prefix in AFTER's tables standing for BEFORE's")
    args = parser.parse_args(argv)
    if any("=" not in alias for alias in args.path_alias):
        parser.error("--path-alias takes AFTER_PREFIX=BEFORE_PREFIX")
    aliases = tuple(tuple(alias.split("=", 1)) for alias in args.path_alias)
    exclude = tuple(args.exclude)
    summary = compare(args.before, args.after, args.atol, exclude, aliases)
    for kind, (n, worst) in summary.items():
        print(f"{kind}: {n} files compared, largest absolute difference {worst:g}")
    same = (_files(args.before, exclude) == _files(args.after, exclude) and bool(summary)
            and all(w <= args.atol for _, w in summary.values()))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
