"""Validation of a run being loaded: every problem becomes an InputError naming its file and subject.

:class:`Candidate` is a run being assembled by :func:`~fmri_pain.bids.layout.load_layout`; the
checks here record what is wrong with it (names, events, sidecar TR, images, confounds) without
raising, so one bad run never hides the problems of the others.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fmri_pain.bids import readers as _bids
from fmri_pain.bids.readers import Problem
from fmri_pain.config.contrast_expressions import parse_contrast
from fmri_pain.config.first_level import ConfoundsSpec
from fmri_pain.config.spec import AnalysisSpec
from fmri_pain.confound_names import MOTION
from fmri_pain.errors import InputError

logger = logging.getLogger(__name__)

TR_RTOL = 1e-3
"""Relative tolerance between ``RepetitionTime`` and the NIfTI header's pixdim[4]."""


@dataclass
class Candidate:
    """A run being assembled; it becomes a :class:`~fmri_pain.bids.runs.Run` if ``errors`` stays empty."""

    subject: str
    session: str | None
    task: str
    run: int | None
    raw_bold: Path
    ents: dict
    bold: Path | None = None
    events: Path | None = None
    mask: Path | None = None
    confounds: Path | None = None
    metadata: dict = field(default_factory=dict)
    condition: str | None = None
    period: int | None = None
    sequence: str | None = None
    covariates: dict = field(default_factory=dict)
    events_df: pd.DataFrame | None = None
    errors: list[InputError] = field(default_factory=list)
    n_volumes: int | None = None
    anat: Path | None = None
    warnings: list[str] = field(default_factory=list)
    tr_source: Path | None = None
    """The sidecar that set ``RepetitionTime``."""
    raw_tr: tuple[float, Path] | None = None
    """RepetitionTime of the raw sidecars and its file, when derivatives override it."""
    blocked: bool = False
    """A subject-wide problem (reported once) invalidates this run."""

    def fail(self, message: str, path: Path | str | None = None) -> None:
        """Record a problem of this run, naming ``path`` (default: its BOLD)."""
        self.errors.append(InputError(message, subject=self.subject,
                                      path=path if path is not None else self.bold or self.raw_bold))

    def merge_sidecar(self, meta: dict, path: Path) -> None:
        """Update ``meta`` with the JSON sidecar at ``path``; an unreadable one is an error."""
        try:
            data = _bids.read_json(path)
        except Problem as exc:
            self.fail(str(exc), path)
            return
        if "RepetitionTime" in data:
            self.tr_source = path
        meta.update(data)


# Entities a raw BOLD file name may carry (BIDS 1.8 func), in their order.
_RAW_BOLD_ENTITIES = ("sub", "ses", "task", "acq", "ce", "rec", "dir", "run", "echo", "part",
                      "chunk")


def bids_name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid raw BOLD file name, or None."""
    stem = name
    for ext in _bids.NIFTI_EXT:
        if stem.endswith(ext):
            stem = stem[: -len(ext)]
            break
    parts = stem.split("_")
    if parts[-1] != "bold":
        return "no _bold suffix"
    order = []
    for part in parts[:-1]:
        key, sep, value = part.partition("-")
        if not sep or not value or key not in _RAW_BOLD_ENTITIES:
            return f"{part!r} is not a BIDS entity of a BOLD file name"
        order.append(_RAW_BOLD_ENTITIES.index(key))
    if order != sorted(set(order)):
        return "entities out of BIDS order or repeated"
    return None


def well_placed(path: Path, ents: dict, root: Path) -> bool:
    """Whether a BOLD file is in ``sub-<label>/[ses-<label>/]func/`` with a matching name."""
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        return False
    sub, ses = ents.get("subject"), ents.get("session")
    if not _bids.is_label(str(sub)) or (ses is not None and not _bids.is_label(str(ses))):
        return False
    want = [f"sub-{sub}"] + ([f"ses-{ses}"] if ses is not None else []) + ["func"]
    prefix = f"sub-{sub}_" + (f"ses-{ses}_" if ses is not None else "")
    return list(parts[:-1]) == want and parts[-1].startswith(prefix)


def check_duplicate_conditions(cands: list[Candidate], sessions_tsv: Path | None, trial_mode: bool,
                               bids_dir: Path) -> None:
    """Fail every run of a condition that several of the subject's sessions map to."""
    if not trial_mode:
        return
    by_cond: dict[str, set] = defaultdict(set)
    for c in cands:
        if c.condition is not None and c.session is not None:
            by_cond[c.condition].add(c.session)
    for cond, labels in by_cond.items():
        if len(labels) > 1:
            names = ", ".join(f"ses-{s}" for s in sorted(labels))
            for c in cands:
                if c.condition == cond:
                    c.fail(f"sessions {names} all map to condition {cond}",
                           sessions_tsv or bids_dir / f"sub-{c.subject}")


def attach_events(c: Candidate, events_files: list, bids_dir: Path, spec: AnalysisSpec,
                  trial_mode: bool) -> None:
    """Read and check the run's ``events.tsv`` (numbers, trial types the spec names) into ``c``."""
    found = _bids.nearest(events_files, c.ents, c.raw_bold.parent, bids_dir)
    if not found:
        c.fail("no events.tsv for this run",
               c.raw_bold.parent / _bids.expected_name(c.raw_bold, "events.tsv"))
        return
    path = c.events = found[-1]
    try:
        df = _bids.read_tsv(path, required=("onset", "duration", "trial_type"))
    except Problem as exc:
        c.fail(str(exc), path)
        return
    if df.empty:
        c.fail("no events", path)
        return
    for col in ("onset", "duration"):
        values = pd.to_numeric(df[col], errors="coerce")
        bad = np.flatnonzero(~np.isfinite(values.to_numpy(dtype=float)))
        if bad.size:
            c.fail(f"non-numeric or missing {col} in row(s) {_rows(bad)}", path)
            return
        neg = np.flatnonzero(values.to_numpy() < 0)
        if neg.size:
            c.fail(f"negative {col} in row(s) {_rows(neg)}", path)
            return
        df[col] = values
    missing_tt = np.flatnonzero(df["trial_type"].isna().to_numpy())
    if missing_tt.size:
        c.fail(f"missing trial_type in row(s) {_rows(missing_tt)}", path)
        return
    types = set(df["trial_type"].astype(str))
    if trial_mode:
        for name in (spec.events.on_trial_type, spec.events.off_trial_type):
            if name is not None and name not in types:
                hint = [t for t in types if t.lower() == name.lower()]
                c.fail(f"no event of trial_type {name!r} (found: {', '.join(sorted(types))})"
                       + (f"; names are case-sensitive, did you mean {hint[0]!r}?" if hint else ""),
                       path)
    for name, expression in spec.first_level.contrasts.items():
        missing = [t for t in parse_contrast(expression) if t not in types]
        if missing:
            found = ", ".join(sorted(types)[:10]) + (f" +{len(types) - 10} more" if len(types) > 10 else "")
            c.fail(f"contrast {name!r} of the spec needs trial type(s) {', '.join(map(repr, missing))}"
                   f" that this run lacks (found: {found})", path)
    c.events_df = df


def _rows(idx) -> str:
    """1-based TSV line numbers (header is line 1) of the first few bad rows."""
    shown = ", ".join(str(int(i) + 2) for i in idx[:5])
    return shown + (f" (+{len(idx) - 5} more)" if len(idx) > 5 else "")


def is_positive_number(x) -> bool:
    """Whether ``x`` is a positive int or float (not a bool)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0


def check_tr(c: Candidate) -> None:
    """``RepetitionTime`` is present in the sidecars and a positive number."""
    tr = c.metadata.get("RepetitionTime")
    sidecar = c.raw_bold.parent / _bids.expected_name(c.raw_bold, "bold.json")
    if tr is None:
        c.fail("RepetitionTime missing from the BOLD JSON sidecar(s)", sidecar)
    elif isinstance(tr, bool) or not isinstance(tr, (int, float)) or not tr > 0:
        c.fail(f"RepetitionTime {tr!r} is not a positive number", sidecar)


def lacks_tr(c: Candidate) -> bool:
    """Errors that make the data checks meaningless (no TR to compare against)."""
    return not is_positive_number(c.metadata.get("RepetitionTime"))


# ---- data checks -------------------------------------------------------------

def _check_timing(c: Candidate, n: int, tr: float) -> None:
    length = n * tr
    ev = c.events_df
    late = np.flatnonzero(ev["onset"].to_numpy() >= length)
    if late.size:
        c.fail(f"onset(s) at or beyond the end of the run ({n} volumes x {tr:g} s = {length:g} s)"
               f" in row(s) {_rows(late)}", c.events)
    long = np.flatnonzero(ev["duration"].to_numpy() > length)
    if long.size:
        c.fail(f"duration(s) longer than the run ({length:g} s) in row(s) {_rows(long)}", c.events)
    # A last block cut by the end of the scan is common and harmless: warn only.
    over = np.flatnonzero((ev["onset"] + ev["duration"]).to_numpy() > length + tr)
    if over.size and not late.size and not long.size:
        c.warnings.append(f"{c.events}: event(s) in row(s) {_rows(over)} end after the run "
                          f"({length:g} s); they are truncated by the model")


def check_files(c: Candidate, min_volumes: int, confounds: ConfoundsSpec) -> None:
    """Open the run's images and confounds (see ``check_data`` of :func:`~fmri_pain.bids.layout.load_layout`).

    ``min_volumes`` is the spec's ``min_volumes``; ``confounds`` its ``first_level.confounds``,
    whose strategy says which confounds columns must exist.
    """
    try:
        info = _bids.inspect_image(c.bold, "full")
    except Problem as exc:
        c.fail(str(exc), c.bold)
        return
    if len(info.shape) != 4:
        c.fail(f"BOLD must be 4D, got shape {info.shape}", c.bold)
        return
    n = c.n_volumes = info.n_volumes
    tr = float(c.metadata["RepetitionTime"])
    if n < min_volumes:
        c.fail(f"only {n} volumes; at least {min_volumes} are required (spec.min_volumes)",
               c.bold)
    if info.n_nonfinite:
        vols = ", ".join(map(str, info.nonfinite_volumes[:5]))
        more = "..." if len(info.nonfinite_volumes) > 5 else ""
        c.fail(f"{info.n_nonfinite} NaN/inf value(s) in {len(info.nonfinite_volumes)} volume(s) "
               f"(0-based: {vols}{more})", c.bold)
    if info.tr is not None and not np.isclose(info.tr, tr, rtol=TR_RTOL, atol=0):
        if info.tr == 1.0:
            # nibabel's default zooms are 1: an unset header, not a contradiction.
            logger.info("%s: header pixdim[4] = 1 (unset?); using RepetitionTime %s", c.bold, tr)
        else:
            where = f" ({c.tr_source.name})" if c.tr_source is not None else ""
            c.fail(f"RepetitionTime {tr:g} s in the sidecar{where} disagrees with the header's "
                   f"pixdim[4] = {info.tr:g} s", c.bold)
    if c.events_df is not None:
        _check_timing(c, n, tr)
    if c.bold != c.raw_bold:
        # The raw BOLD is not analysed, but a broken or mismatched one is still bad input.
        try:
            raw_info = _bids.inspect_image(c.raw_bold, "quick")
        except Problem as exc:
            c.fail(f"raw BOLD: {exc}", c.raw_bold)
        else:
            if raw_info.n_volumes != n:
                c.fail(f"raw BOLD has {raw_info.n_volumes} volumes but the preprocessed one {n}",
                       c.raw_bold)
            if (raw_info.tr is not None and raw_info.tr != 1.0 and c.raw_tr is not None
                    and not np.isclose(raw_info.tr, c.raw_tr[0], rtol=TR_RTOL, atol=0)):
                c.fail(f"raw BOLD header pixdim[4] = {raw_info.tr:g} s but RepetitionTime "
                       f"{c.raw_tr[0]:g} s in {c.raw_tr[1].name}", c.raw_bold)
    if c.mask is not None:
        try:
            minfo = _bids.inspect_image(c.mask, "header")
            mask = _bids.load_mask(c.mask)
        except Problem as exc:
            c.fail(str(exc), c.mask)
        else:
            if mask.shape != tuple(info.shape[:3]):
                c.fail(f"mask shape {mask.shape} differs from the BOLD's {info.shape[:3]}", c.mask)
            elif not np.allclose(minfo.affine, info.affine, atol=1e-3):
                c.fail("mask affine differs from the BOLD's", c.mask)
            elif not mask.any():
                c.fail("mask is empty", c.mask)
    if c.confounds is not None:
        try:
            conf = _bids.read_tsv(c.confounds)
        except Problem as exc:
            c.fail(str(exc), c.confounds)
        else:
            if len(conf) != n:
                c.fail(f"{len(conf)} rows but the BOLD has {n} volumes", c.confounds)
            _check_confound_columns(c, conf, confounds)


def _check_confound_columns(c: Candidate, conf: pd.DataFrame, strategy: ConfoundsSpec) -> None:
    """The columns the confounds strategy needs exist and the motion estimates are finite."""
    if strategy.strategy == "none":
        return
    need = list(MOTION)
    if strategy.strategy == "acompcor":
        need += [f"a_comp_cor_{i:02d}" for i in range(strategy.n_acompcor)]
    missing = [col for col in need if col not in conf.columns]
    if missing:
        c.fail(f"missing confound column(s) {missing} needed by strategy "
               f"{strategy.strategy!r}", c.confounds)
        return
    values = conf[list(MOTION)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
    if bad.size:
        c.fail(f"missing or non-numeric motion estimates in row(s) {_rows(bad)}", c.confounds)
