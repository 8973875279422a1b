"""The analyst API: browse, re-threshold, compare and plot what the pipeline wrote.

Nothing here re-runs the analysis. :func:`load_results` indexes every
BIDS-like file under an fmri-pain output folder (statistical maps, design
matrices, cluster tables, pathway tables, reports) by its entities, and the
returned :class:`Results` serves them as nibabel images and pandas
DataFrames. Re-thresholding works on the stored z maps (parametric FDR /
Bonferroni through nilearn's ``threshold_stats_img``) or on the stored
permutation / TFCE p-value maps (:mod:`fmri_pain.results.thresholds`); plots
come from :mod:`fmri_pain.results.plots`. File names are read through the
naming contract that wrote them (:mod:`fmri_pain.bids.naming`).

Examples
--------
>>> from fmri_pain import load_results               # doctest: +SKIP
>>> res = load_results("demo-output")               # doctest: +SKIP
>>> res.contrasts                                    # doctest: +SKIP
['scs', 'drgs', 'dual', 'drgsMinusScs', ...]
>>> z = res.map("dualMinusScs")                      # group z map  # doctest: +SKIP
>>> img, thr = res.threshold("dualMinusScs", "fdr", alpha=0.05)  # doctest: +SKIP
>>> res.clusters("dualMinusScs", desc="fdr")         # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import nibabel as nib
import pandas as pd

from fmri_pain.bids.derivatives import sidecar_path
from fmri_pain.bids.naming import PATHWAY_TABLES, order_contrasts
from fmri_pain.results.index import index_outputs, read_tsv, select, strip_label
from fmri_pain.results.plots import Plotting
from fmri_pain.results.thresholds import Rethresholding
from fmri_pain.trial import CONDITIONS

__all__ = ["Results", "load_results"]


def load_results(output_dir: Path | str) -> Results:
    """Open an fmri-pain output folder.

    Parameters
    ----------
    output_dir : path
        The ``OUTPUT_DIR`` given to ``fmri-pain`` (holds ``dataset_description.json``,
        ``sub-*/``, ``group/`` and the HTML reports).

    Returns
    -------
    Results

    Raises
    ------
    FileNotFoundError
        If the folder does not exist or holds no fmri-pain outputs.
    """
    return Results(output_dir)


class Results(Rethresholding, Plotting):
    """Read-only view of one fmri-pain output folder.

    Parameters
    ----------
    output_dir : path
        The pipeline's output folder.

    Attributes
    ----------
    output_dir : pathlib.Path
    files : pandas.DataFrame
        One row per BIDS-named file with columns ``level`` (``run``,
        ``session``, ``subject`` or ``group``), ``subject``, ``session``,
        ``task``, ``run``, ``space``, ``contrast``, ``desc``, ``stat``,
        ``suffix``, ``extension`` and ``path``.
    """

    def __init__(self, output_dir: Path | str) -> None:
        self.output_dir = Path(output_dir).expanduser().resolve()
        if not self.output_dir.is_dir():
            raise FileNotFoundError(f"fmri-pain output folder {self.output_dir} does not exist")
        self.files = index_outputs(self.output_dir)
        if self.files.empty and not (self.output_dir / "dataset_description.json").is_file():
            raise FileNotFoundError(
                f"{self.output_dir} holds no fmri-pain outputs (no dataset_description.json, "
                "no statistical maps); run `fmri-pain BIDS_DIR OUTPUT_DIR participant` first"
            )
        self._cache: dict[Path, nib.Nifti1Image] = {}

    # ------------------------------------------------------------- listings
    @property
    def subjects(self) -> list[str]:
        """Subject labels (without ``sub-``) with any output."""
        return sorted(self.files["subject"].dropna().unique())

    @property
    def sessions(self) -> list[str]:
        """Session labels (without ``ses-``) present in any subject."""
        return sorted(self.files["session"].dropna().unique())

    def sessions_of(self, subject: str) -> list[str]:
        """Session labels of one subject."""
        subject = strip_label(subject, "sub")
        self._check("subject", subject, self.subjects)
        return sorted(self.files.loc[self.files["subject"] == subject, "session"].dropna().unique())

    @property
    def tasks(self) -> list[str]:
        """Task labels present."""
        return sorted(self.files["task"].dropna().unique())

    @property
    def conditions(self) -> list[str]:
        """Conditions analysed, from the session maps' provenance (else the session labels).

        The pipeline records each session's condition in the sidecar of its
        session-level maps; when that is missing the session labels are used
        upper-cased (``ses-scs`` -> ``SCS``), as the pipeline itself does.
        """
        found: list[str] = []
        for path in select(self.files, level="session", suffix="statmap", stat="z")["path"]:
            side = self.sidecar(path)
            cond = side.get("Condition") or side.get("Parameters", {}).get("condition")
            if cond and cond not in found:
                found.append(str(cond))
        if not found:
            found = [s.upper() for s in self.sessions]
        order = {c: i for i, c in enumerate(CONDITIONS)}
        return sorted(found, key=lambda c: (order.get(c, len(order)), c))

    @property
    def contrasts(self) -> list[str]:
        """Every contrast with a map at any level (group, subject or session)."""
        return order_contrasts(self.maps()["contrast"].dropna().unique())

    @property
    def group_contrasts(self) -> list[str]:
        """Contrasts with group-level maps."""
        return order_contrasts(self.maps(level="group")["contrast"].dropna().unique())

    @property
    def subject_contrasts(self) -> list[str]:
        """Contrasts with subject-level (across-session) maps."""
        return order_contrasts(self.maps(level="subject")["contrast"].dropna().unique())

    def maps(self, level: str | None = None, **criteria: Any) -> pd.DataFrame:
        """Table of the statistical maps present.

        Parameters
        ----------
        level : {"group", "subject", "session", "run"}, optional
            Restrict to one level.
        **criteria
            Column filters, e.g. ``contrast="dual"``, ``stat="z"``.

        Returns
        -------
        pandas.DataFrame
            Columns ``level, subject, session, task, contrast, desc, stat, path``.
        """
        df = self.files[(self.files["suffix"] == "statmap")
                        & self.files["extension"].isin([".nii", ".nii.gz"])]
        if level is not None:
            df = df[df["level"] == level]
        for key, value in criteria.items():
            df = df[df[key] == value]
        return df[["level", "subject", "session", "task", "run", "contrast", "desc", "stat",
                   "path"]].reset_index(drop=True)

    def summary(self) -> pd.DataFrame:
        """Which maps exist per contrast: number of subjects and group stats / descs."""
        rows = []
        for contrast in self.contrasts:
            sub = self.maps(level="subject", contrast=contrast)
            grp = self.maps(level="group", contrast=contrast)
            rows.append({
                "contrast": contrast,
                "n_subjects": sub["subject"].nunique(),
                "group_stats": ",".join(sorted(grp.loc[grp["desc"].isna(), "stat"].unique())),
                "group_thresholded": ",".join(sorted(f"{d}:{s}" for d, s in
                                                     grp.dropna(subset=["desc"])[["desc", "stat"]]
                                                     .drop_duplicates().itertuples(index=False))),
                "has_clusters": bool(len(select(self.files, level="group", contrast=contrast,
                                                      suffix="clusters"))),
            })
        return pd.DataFrame(rows)

    def __repr__(self) -> str:
        return (f"<Results {self.output_dir}: {len(self.subjects)} subjects, "
                f"sessions {self.sessions}, {len(self.group_contrasts)} group contrasts "
                f"{self.group_contrasts}>")

    # ------------------------------------------------------------------ maps
    def map_path(self, contrast: str, stat: str = "z", subject: str | None = None,
                 session: str | None = None, desc: str | None = None,
                 task: str | None = None) -> Path:
        """Path of one statistical map (see :meth:`map`)."""
        subject = strip_label(subject, "sub")
        session = strip_label(session, "ses")
        if session is not None and subject is None:
            raise ValueError("a session map needs a subject")
        level = "group" if subject is None else ("session" if session else "subject")
        pool = self.maps(level=level)
        where = "group level" if subject is None else f"sub-{subject}" + (f" ses-{session}" if session else "")
        if subject is not None:
            self._check("subject", subject, self.subjects)
            pool = pool[pool["subject"] == subject]
            if session is not None:
                pool = pool[pool["session"] == session]
        self._check("contrast", contrast, order_contrasts(pool["contrast"].dropna().unique()), where)
        pool = pool[pool["contrast"] == contrast]
        hits = pool[(pool["stat"] == stat) & (pool["desc"].isna() if desc is None else pool["desc"] == desc)]
        if task is not None:
            hits = hits[hits["task"] == task]
        if hits.empty:
            have = sorted(f"stat={s}" + (f", desc={d}" if isinstance(d, str) else "")
                          for d, s in pool[["desc", "stat"]].drop_duplicates().itertuples(index=False))
            raise KeyError(f"no map with stat={stat!r}, desc={desc!r} for contrast {contrast!r} at {where} "
                           f"in {self.output_dir}; available: {have}")
        if len(hits) > 1:
            raise ValueError(f"{len(hits)} maps match contrast {contrast!r} stat {stat!r} at {where} "
                             f"(tasks {sorted(hits['task'].dropna().unique())}); pass task=...")
        return Path(hits["path"].iloc[0])

    def map(self, contrast: str, stat: str = "z", subject: str | None = None,
            session: str | None = None, desc: str | None = None,
            task: str | None = None) -> nib.Nifti1Image:
        """One statistical map as a nibabel image.

        Parameters
        ----------
        contrast : str
            Contrast name, e.g. ``"dualMinusScs"`` (see :attr:`contrasts`).
        stat : str, default "z"
            ``z``, ``t``, ``F``, ``effect`` (percent signal change), ``variance``, ``dz``,
            ``hedgesg`` (standardised effects of t contrasts), ``logp`` ... as stored.
        subject : str, optional
            Subject label (with or without ``sub-``); None for the group map.
        session : str, optional
            Session label for session-level maps (``contrast="stim"``).
        desc : str, optional
            ``fdr``, ``fwe``, ``perm``, ``permfwe`` ... for thresholded or
            permutation maps; None for the unthresholded map.
        task : str, optional
            Needed only when several tasks were analysed.

        Raises
        ------
        KeyError
            If no such map exists; the message lists what does.
        """
        path = self.map_path(contrast, stat=stat, subject=subject, session=session, desc=desc, task=task)
        if path not in self._cache:
            self._cache[path] = nib.load(path)
        return self._cache[path]

    def mask(self) -> nib.Nifti1Image | None:
        """The group brain mask, if the pipeline wrote one (``group/*_mask.nii.gz``)."""
        hits = select(self.files, level="group", suffix="mask")
        return nib.load(hits["path"].iloc[0]) if len(hits) else None

    # ---------------------------------------------------------------- tables
    def design_matrix(self, subject: str, session: str | None = None, run: int | str | None = None,
                      task: str | None = None) -> pd.DataFrame:
        """A run-level design matrix (``sub-XX[_ses-YY]_task-T_run-N_design.tsv``).

        With ``session`` / ``run`` left out, the subject's only session / first
        run is used.
        """
        subject = strip_label(subject, "sub")
        self._check("subject", subject, self.subjects)
        df = select(self.files, subject=subject, suffix="design", extension=".tsv")
        if session is not None:
            session = strip_label(session, "ses")
            self._check(f"session of sub-{subject}", session, sorted(df["session"].dropna().unique()))
            df = df[df["session"] == session]
        elif df["session"].nunique() > 1:
            raise ValueError(f"sub-{subject} has design matrices in sessions "
                             f"{sorted(df['session'].dropna().unique())}; pass session=...")
        if run is not None:
            df = df[df["run"] == str(run)]
        if task is not None:
            df = df[df["task"] == task]
        if df.empty:
            raise KeyError(f"no design matrix for sub-{subject} session={session!r} run={run!r} "
                           f"in {self.output_dir}")
        df = df.sort_values("run", key=lambda s: pd.to_numeric(s, errors="coerce"))
        return read_tsv(df["path"].iloc[0])

    def group_design_matrix(self, contrast: str) -> pd.DataFrame:
        """The group-level design matrix of a contrast."""
        pool = select(self.files, level="group", suffix="design", extension=".tsv")
        self._check("contrast with a group design", contrast, order_contrasts(pool["contrast"].dropna().unique()))
        return read_tsv(pool.loc[pool["contrast"] == contrast, "path"].iloc[0])

    def clusters(self, contrast: str, desc: str = "fdr") -> pd.DataFrame:
        """The stored cluster table of a thresholded group map (with atlas labels)."""
        pool = select(self.files, level="group", suffix="clusters", extension=".tsv")
        self._check("contrast with cluster tables", contrast, order_contrasts(pool["contrast"].dropna().unique()))
        pool = pool[pool["contrast"] == contrast]
        self._check(f"cluster-table desc of {contrast}", desc, sorted(pool["desc"].dropna().unique()))
        return read_tsv(pool.loc[pool["desc"] == desc, "path"].iloc[0])

    def pathway_table(self, name: str) -> pd.DataFrame:
        """A table of ``group/pathways/`` by key, e.g. ``"roi_effects"`` (``desc-roiEffects_table.tsv``).

        Keys are those of :data:`~fmri_pain.bids.naming.PATHWAY_TABLES`; the file is found by
        its entities (``desc``, suffix ``table``) in the files table, as indexed when the
        results were loaded.
        """
        desc = PATHWAY_TABLES.get(name)
        pool = select(self.files, level="group", suffix="table", extension=".tsv", desc=desc)
        if desc is None or pool.empty:
            raise KeyError(f"no pathway table {name!r} in {self.output_dir / 'group' / 'pathways'}; "
                           f"available: {self.pathway_tables}")
        return read_tsv(pool["path"].iloc[0])

    @property
    def pathway_tables(self) -> list[str]:
        """Keys (:data:`~fmri_pain.bids.naming.PATHWAY_TABLES`) of the pathway tables present."""
        present = set(select(self.files, level="group", suffix="table", extension=".tsv")["desc"])
        return sorted(key for key, desc in PATHWAY_TABLES.items() if desc in present)

    def roi_effects(self) -> pd.DataFrame:
        """ROI effect per subject, session/condition and node (``desc-roiEffects_table.tsv``)."""
        return self.pathway_table("roi_effects")

    def roi_stats(self) -> pd.DataFrame:
        """Group statistics per node and contrast (``desc-roiStats_table.tsv``)."""
        return self.pathway_table("roi_stats")

    def effect_sizes(self) -> pd.DataFrame:
        """Effect sizes (psc, dz, Hedges' g) with BCa intervals per unit and contrast (``desc-effectSizes_table.tsv``)."""
        return self.pathway_table("effect_sizes")

    @property
    def connectivity_kinds(self) -> list[str]:
        """Kinds of connectivity tables present (``desc-connectivity<Kind>_table.tsv``)."""
        return [t[len("connectivity_"):] for t in self.pathway_tables if t.startswith("connectivity_")]

    def connectivity(self, kind: str | None = None) -> pd.DataFrame:
        """A connectivity table; ``kind`` may be left out when there is only one."""
        kinds = self.connectivity_kinds
        if kind is None:
            if len(kinds) != 1:
                raise KeyError(f"connectivity kinds present: {kinds}; pass kind=...")
            kind = kinds[0]
        self._check("connectivity kind", kind, kinds)
        return self.pathway_table(f"connectivity_{kind}")

    def behaviour(self) -> pd.DataFrame:
        """Brain-behaviour table (``desc-behaviour_table.tsv``)."""
        return self.pathway_table("behaviour")

    def equivalence(self) -> pd.DataFrame:
        """Non-inferiority, superiority and TOST tests per node and pathway (``desc-equivalence_table.tsv``)."""
        return self.pathway_table("equivalence")

    def carryover(self, table: str = "carryover") -> pd.DataFrame:
        """A table of the carry-over analysis (``group.carryover``): ``carryover``
        (``desc-carryover_table.tsv``: carryoverF per unit and the shift of the condition estimates) or
        ``sequence`` (``desc-sequenceStats_table.tsv``: the between-subject sequence test)."""
        stems = {"carryover": "carryover", "sequence": "sequence_stats"}
        self._check("carry-over table", table, list(stems))
        return self.pathway_table(stems[table])

    def decoding(self) -> pd.DataFrame:
        """Decoding results (``desc-decoding_table.tsv``)."""
        return self.pathway_table("decoding")

    def responders(self, table: str = "status") -> pd.DataFrame:
        """A table of the responder analysis: ``status`` (``desc-responders_table.tsv``), ``stats``
        (``desc-responderStats_table.tsv``), ``prediction`` (``desc-responderPrediction_table.tsv``) or ``maps``
        (``desc-responderMaps_table.tsv``: which condition's maps were written, or why not)."""
        stems = {"status": "responders", "stats": "responder_stats", "prediction": "responder_prediction",
                 "maps": "responder_maps"}
        self._check("responder table", table, list(stems))
        return self.pathway_table(stems[table])

    def figures(self) -> list[Path]:
        """PNG figures written by the pipeline (design matrices, pathway plots ...)."""
        return sorted(p for p in self.output_dir.rglob("*.png")
                      if p.relative_to(self.output_dir).parts[0] not in ("logs", "work"))

    def reports(self) -> list[Path]:
        """The HTML reports (``sub-*.html``, ``group.html``)."""
        return sorted(self.output_dir.glob("*.html"))

    def sidecar(self, path: Path | str) -> dict[str, Any]:
        """The JSON sidecar (provenance) of an output file; ``{}`` if there is none."""
        side = sidecar_path(path)
        if not side.is_file():
            return {}
        try:
            return json.loads(side.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"invalid JSON sidecar {side}: {exc}") from exc

    def provenance(self, contrast: str, stat: str = "z", **kwargs: Any) -> dict[str, Any]:
        """The sidecar of a map selected like :meth:`map`."""
        return self.sidecar(self.map_path(contrast, stat=stat, **kwargs))

    # ------------------------------------------------------------- helpers
    def _check(self, what: str, value: Any, available: Iterable[Any], where: str | None = None) -> None:
        available = list(available)
        if value not in available:
            at = f" at {where}" if where else ""
            raise KeyError(f"no {what} {value!r}{at} in {self.output_dir}; available: {available}")
