"""The group report's QC table: per subject and session, motion, censoring, dof and mask coverage.

Everything is read from what the participant level wrote: the first-level design sidecars
(``CensoredVolumes``, ``NumberOfVolumes``, ``ResidualDegreesOfFreedom`` and the confounds
file among their ``Sources``), the confounds TSVs those name (``framewise_displacement``),
and the subject maps the group level collected (their non-zero voxels against the group
mask). Nothing is fitted here.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote, urlparse

import nibabel as nib
import numpy as np
import pandas as pd

from fmri_pain.bids.naming import parse_bids_name

QC_COLUMNS = ["subject", "session", "runs", "volumes", "censored", "censored %", "mean FD (mm)",
              "residual dof", "mask coverage %"]


def _dataset_links(output_dir: Path) -> dict[str, Path]:
    """``DatasetLinks`` of the outputs' ``dataset_description.json`` as local folders."""
    try:
        links = json.loads((output_dir / "dataset_description.json").read_text()).get("DatasetLinks", {})
    except (OSError, ValueError, AttributeError):
        return {}
    out = {}
    for name, uri in (links or {}).items():
        parsed = urlparse(str(uri))
        if parsed.scheme in ("", "file"):
            out[str(name)] = Path(unquote(parsed.path))
    return out


def _resolve(uri: str, output_dir: Path, links: dict[str, Path]) -> Path | None:
    """A sidecar's source (``bids:<name>:<path>``, ``bids::<path>`` or ``file://``) as a local path."""
    if uri.startswith("bids:"):
        _, name, rel = uri.split(":", 2)
        root = output_dir if name == "" else links.get(name)
        return None if root is None else root / rel
    parsed = urlparse(uri)
    return Path(unquote(parsed.path)) if parsed.scheme == "file" else None


def _is_confounds(path: Path) -> bool:
    entities = parse_bids_name(path.name) or {}
    return (entities.get("desc") == "confounds" and entities.get("extension") == ".tsv"
            and entities.get("suffix") in ("timeseries", "regressors"))


def _framewise_displacement(sources: list[str], output_dir: Path,
                            links: dict[str, Path]) -> np.ndarray | None:
    """The run's framewise displacement (mm; the first volume's n/a dropped), None if unreadable."""
    for uri in sources:
        path = _resolve(str(uri), output_dir, links)
        if path is None or not _is_confounds(path):
            continue
        try:
            fd = pd.read_csv(path, sep="\t", usecols=["framewise_displacement"], na_values="n/a")
        except (OSError, ValueError):
            return None
        values = fd["framewise_displacement"].to_numpy(dtype=float)
        return values[np.isfinite(values)]
    return None


def _run_rows(output_dir: Path, subjects: list[str]) -> pd.DataFrame:
    links = _dataset_links(output_dir)
    rows = []
    for path in sorted(output_dir.glob("sub-*/**/*_design.json")):
        entities = parse_bids_name(path.name) or {}
        if entities.get("sub") not in subjects:
            continue
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        fd = _framewise_displacement(meta.get("Sources", []), output_dir, links)
        rows.append({"subject": entities["sub"], "session": entities.get("ses"),
                     "volumes": meta.get("NumberOfVolumes"), "censored": meta.get("CensoredVolumes"),
                     "residual dof": meta.get("ResidualDegreesOfFreedom", meta.get("DegreesOfFreedom")),
                     "fd_sum": float(fd.sum()) if fd is not None else np.nan,
                     "fd_n": fd.size if fd is not None else 0})
    return pd.DataFrame(rows, columns=["subject", "session", "volumes", "censored", "residual dof",
                                       "fd_sum", "fd_n"])


def _coverage(subject_maps: pd.DataFrame, group_mask: Path | None) -> dict[tuple, float]:
    """% of the group mask's voxels inside each (subject, session) map's non-zero voxels."""
    if group_mask is None or subject_maps is None or subject_maps.empty or "z" not in subject_maps:
        return {}
    try:
        mask = np.asanyarray(nib.load(group_mask).dataobj) > 0
    except (OSError, ValueError):
        return {}
    if not mask.any():
        return {}
    has_session = "session" in subject_maps and subject_maps["session"].notna().any()
    rows = (subject_maps[subject_maps["session"].notna()] if has_session
            else subject_maps[subject_maps["contrast"] == "stim"])
    # every map of one session covers the same voxels: read one per (subject, session)
    rows = rows.drop_duplicates(["subject", "session"] if has_session else ["subject"])
    out = {}
    for row in rows.itertuples():
        data = np.asanyarray(nib.load(row.z).dataobj)
        if data.shape[:3] != mask.shape:
            continue
        covered = np.isfinite(data) & (data != 0)
        session = row.session if has_session else None
        out[(row.subject, session)] = 100.0 * float((covered & mask).sum()) / float(mask.sum())
    return out


def group_qc_table(output_dir: Path, subjects: list[str], subject_maps: pd.DataFrame | None = None,
                   group_mask: Path | None = None) -> pd.DataFrame:
    """One row per subject and session: runs, volumes, censoring, mean FD, residual dof, coverage.

    Parameters
    ----------
    output_dir : path
        The outputs (first-level design sidecars under ``sub-*``).
    subjects : list of str
        The subjects of the group level.
    subject_maps : DataFrame, optional
        The group level's collected subject maps (``subject``, ``session``,
        ``contrast``, ``z`` paths): their non-zero voxels give the coverage.
    group_mask : path, optional
        The group mask (coverage is the % of its voxels a subject's map covers).

    Returns
    -------
    DataFrame
        :data:`QC_COLUMNS`; censored volumes and residual dof summed over a
        session's runs, mean FD over all their volumes; n/a when not recorded.
    """
    runs = _run_rows(Path(output_dir), [str(s) for s in subjects])
    if runs.empty:
        return pd.DataFrame(columns=QC_COLUMNS)
    runs["session"] = runs["session"].astype(object).where(runs["session"].notna(), None)
    grouped = runs.groupby(["subject", "session"], dropna=False, sort=True)
    table = grouped.agg(runs=("volumes", "size"), volumes=("volumes", "sum"),
                        censored=("censored", "sum"), dof=("residual dof", "sum"),
                        fd_sum=("fd_sum", "sum"), fd_n=("fd_n", "sum")).reset_index()
    table["censored %"] = 100.0 * table["censored"] / table["volumes"]
    table["mean FD (mm)"] = np.where(table["fd_n"] > 0, table["fd_sum"] / table["fd_n"].clip(lower=1),
                                     np.nan)
    coverage = _coverage(subject_maps, group_mask)
    table["mask coverage %"] = [coverage.get((s, None if pd.isna(ses) else ses), np.nan)
                                for s, ses in zip(table["subject"], table["session"])]
    table = table.rename(columns={"dof": "residual dof"})
    table["session"] = table["session"].fillna("n/a")
    return table[QC_COLUMNS]
