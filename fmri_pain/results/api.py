"""The analyst API: browse, re-threshold, compare and plot what the pipeline wrote.

Nothing here re-runs the analysis. :func:`load_results` indexes every
BIDS-like file under an fmri-pain output folder (statistical maps, design
matrices, cluster tables, pathway tables, reports) by its entities, and the
returned :class:`Results` serves them as nibabel images and pandas
DataFrames. Re-thresholding works on the stored z maps (parametric FDR /
Bonferroni through nilearn's ``threshold_stats_img``) or on the stored
permutation / TFCE p-value maps.

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
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

__all__ = ["Results", "load_results", "parse_bids_name"]

_NAME_RE = re.compile(
    r"^(?P<entities>(?:[a-zA-Z]+-[a-zA-Z0-9]+_)*)(?P<suffix>[a-zA-Z0-9]+)(?P<ext>(?:\.[a-zA-Z0-9]+)+)$"
)
_ENTITY_RE = re.compile(r"([a-zA-Z]+)-([a-zA-Z0-9]+)_")
_COLUMNS = ("level", "subject", "session", "task", "run", "space", "contrast", "desc", "stat",
            "suffix", "extension", "path")
_PARAMETRIC = {"fdr": "fdr", "bonferroni": "bonferroni", "fwe": "bonferroni", "none": "fpr",
               "fpr": "fpr", "uncorrected": "fpr"}
_P_STATS = ("logpfwe", "logp", "pfwe", "p")
# Order in which contrasts are listed (the trial's set first, then alphabetical).
_CONTRAST_ORDER = ("stim", "scs", "drgs", "dual", "drgsMinusScs", "dualMinusScs", "dualMinusDrgs",
                   "dualMinusMean", "conditionF")


def parse_bids_name(name: str) -> dict[str, str] | None:
    """Split a BIDS-like file name into entities, suffix and extension.

    Parameters
    ----------
    name : str
        A file name such as ``task-stim_contrast-dual_desc-fdr_stat-z_statmap.nii.gz``.

    Returns
    -------
    dict or None
        Entity key -> value plus ``suffix`` and ``extension``; None if the name
        does not follow the ``key-value_..._suffix.ext`` pattern.

    Examples
    --------
    >>> parse_bids_name("sub-01_task-stim_run-1_design.tsv")
    {'sub': '01', 'task': 'stim', 'run': '1', 'suffix': 'design', 'extension': '.tsv'}
    """
    match = _NAME_RE.match(name)
    if match is None:
        return None
    entities = dict(_ENTITY_RE.findall(match["entities"]))
    entities["suffix"] = match["suffix"]
    entities["extension"] = match["ext"]
    return entities


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


class Results:
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
        self.files = self._index()
        if self.files.empty and not (self.output_dir / "dataset_description.json").is_file():
            raise FileNotFoundError(
                f"{self.output_dir} holds no fmri-pain outputs (no dataset_description.json, "
                "no statistical maps); run `fmri-pain BIDS_DIR OUTPUT_DIR participant` first"
            )
        self._cache: dict[Path, nib.Nifti1Image] = {}

    # ------------------------------------------------------------------ index
    def _index(self) -> pd.DataFrame:
        rows = []
        for path in sorted(self.output_dir.rglob("*")):
            rel = path.relative_to(self.output_dir)
            if not path.is_file() or rel.parts[0] in ("logs", "work") or path.name.startswith("."):
                continue
            ents = parse_bids_name(path.name)
            if ents is None:
                continue
            if rel.parts[0] == "group":
                level = "group"
            elif ents.get("sub") is None:
                continue
            elif ents.get("run") is not None:
                level = "run"
            elif ents.get("ses") is not None:
                level = "session"
            else:
                level = "subject"
            rows.append({
                "level": level, "subject": ents.get("sub"), "session": ents.get("ses"),
                "task": ents.get("task"), "run": ents.get("run"), "space": ents.get("space"),
                "contrast": ents.get("contrast"), "desc": ents.get("desc"), "stat": ents.get("stat"),
                "suffix": ents["suffix"], "extension": ents["extension"], "path": path,
            })
        return pd.DataFrame(rows, columns=list(_COLUMNS)).astype(object)

    def _select(self, **criteria: Any) -> pd.DataFrame:
        df = self.files
        for key, value in criteria.items():
            if value is None:
                df = df[df[key].isna()]
            elif isinstance(value, (set, tuple, list)):
                df = df[df[key].isin(list(value))]
            else:
                df = df[df[key] == value]
        return df

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
        subject = _strip(subject, "sub")
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
        for path in self._select(level="session", suffix="statmap", stat="z")["path"]:
            side = self.sidecar(path)
            cond = side.get("Condition") or side.get("Parameters", {}).get("condition")
            if cond and cond not in found:
                found.append(str(cond))
        if not found:
            found = [s.upper() for s in self.sessions]
        order = {c: i for i, c in enumerate(("SCS", "DRGS", "DUAL"))}
        return sorted(found, key=lambda c: (order.get(c, len(order)), c))

    @property
    def contrasts(self) -> list[str]:
        """Every contrast with a map at any level (group, subject or session)."""
        return _order_contrasts(self.maps()["contrast"].dropna().unique())

    @property
    def group_contrasts(self) -> list[str]:
        """Contrasts with group-level maps."""
        return _order_contrasts(self.maps(level="group")["contrast"].dropna().unique())

    @property
    def subject_contrasts(self) -> list[str]:
        """Contrasts with subject-level (across-session) maps."""
        return _order_contrasts(self.maps(level="subject")["contrast"].dropna().unique())

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
                "has_clusters": bool(len(self._select(level="group", contrast=contrast,
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
        subject = _strip(subject, "sub")
        session = _strip(session, "ses")
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
        self._check("contrast", contrast, _order_contrasts(pool["contrast"].dropna().unique()), where)
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
            ``z``, ``t``, ``F``, ``effect``, ``variance``, ``logp`` ... as stored.
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
        hits = self._select(level="group", suffix="mask")
        return nib.load(hits["path"].iloc[0]) if len(hits) else None

    # ---------------------------------------------------------------- tables
    def design_matrix(self, subject: str, session: str | None = None, run: int | str | None = None,
                      task: str | None = None) -> pd.DataFrame:
        """A run-level design matrix (``sub-XX[_ses-YY]_task-T_run-N_design.tsv``).

        With ``session`` / ``run`` left out, the subject's only session / first
        run is used.
        """
        subject = _strip(subject, "sub")
        self._check("subject", subject, self.subjects)
        df = self._select(subject=subject, suffix="design", extension=".tsv")
        if session is not None:
            session = _strip(session, "ses")
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
        return _read_tsv(df["path"].iloc[0])

    def group_design_matrix(self, contrast: str) -> pd.DataFrame:
        """The group-level design matrix of a contrast."""
        pool = self._select(level="group", suffix="design", extension=".tsv")
        self._check("contrast with a group design", contrast, _order_contrasts(pool["contrast"].dropna().unique()))
        return _read_tsv(pool.loc[pool["contrast"] == contrast, "path"].iloc[0])

    def clusters(self, contrast: str, desc: str = "fdr") -> pd.DataFrame:
        """The stored cluster table of a thresholded group map (with atlas labels)."""
        pool = self._select(level="group", suffix="clusters", extension=".tsv")
        self._check("contrast with cluster tables", contrast, _order_contrasts(pool["contrast"].dropna().unique()))
        pool = pool[pool["contrast"] == contrast]
        self._check(f"cluster-table desc of {contrast}", desc, sorted(pool["desc"].dropna().unique()))
        return _read_tsv(pool.loc[pool["desc"] == desc, "path"].iloc[0])

    def pathway_table(self, name: str) -> pd.DataFrame:
        """A table of ``group/pathways/`` by stem, e.g. ``"roi_effects"``."""
        folder = self.output_dir / "group" / "pathways"
        path = folder / f"{name}.tsv"
        if not path.is_file():
            raise KeyError(f"no pathway table {name!r} in {folder}; available: {self.pathway_tables}")
        return _read_tsv(path)

    @property
    def pathway_tables(self) -> list[str]:
        """Stems of the TSV tables in ``group/pathways/``."""
        folder = self.output_dir / "group" / "pathways"
        return sorted(p.name[:-4] for p in folder.glob("*.tsv")) if folder.is_dir() else []

    def roi_effects(self) -> pd.DataFrame:
        """ROI effect per subject, session/condition and node (``roi_effects.tsv``)."""
        return self.pathway_table("roi_effects")

    def roi_stats(self) -> pd.DataFrame:
        """Group statistics per node and contrast (``roi_stats.tsv``)."""
        return self.pathway_table("roi_stats")

    @property
    def connectivity_kinds(self) -> list[str]:
        """Kinds of connectivity tables present (``connectivity_<kind>.tsv``)."""
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
        """Brain-behaviour table (``behaviour.tsv``)."""
        return self.pathway_table("behaviour")

    def decoding(self) -> pd.DataFrame:
        """Decoding results (``decoding.tsv``)."""
        return self.pathway_table("decoding")

    def figures(self) -> list[Path]:
        """PNG figures written by the pipeline (design matrices, pathway plots ...)."""
        return sorted(p for p in self.output_dir.rglob("*.png")
                      if p.relative_to(self.output_dir).parts[0] not in ("logs", "work"))

    def reports(self) -> list[Path]:
        """The HTML reports (``sub-*.html``, ``group.html``)."""
        return sorted(self.output_dir.glob("*.html"))

    def sidecar(self, path: Path | str) -> dict[str, Any]:
        """The JSON sidecar (provenance) of an output file; ``{}`` if there is none."""
        path = Path(path)
        name = path.name
        for ext in (".nii.gz", ".nii", ".tsv", ".png"):
            if name.endswith(ext):
                name = name[: -len(ext)]
                break
        side = path.with_name(name + ".json")
        if not side.is_file():
            return {}
        try:
            return json.loads(side.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"invalid JSON sidecar {side}: {exc}") from exc

    def provenance(self, contrast: str, stat: str = "z", **kwargs: Any) -> dict[str, Any]:
        """The sidecar of a map selected like :meth:`map`."""
        return self.sidecar(self.map_path(contrast, stat=stat, **kwargs))

    # ----------------------------------------------------------- thresholds
    def threshold(self, contrast: str, method: str = "fdr", alpha: float = 0.05,
                  cluster_threshold: int = 0, height: float | None = None,
                  two_sided: bool = False, subject: str | None = None,
                  desc: str | None = None) -> tuple[nib.Nifti1Image, float]:
        """Re-threshold a stored z map.

        Parameters
        ----------
        contrast : str
            Contrast name.
        method : str, default "fdr"
            ``fdr``, ``fwe`` / ``bonferroni`` (parametric, nilearn
            ``threshold_stats_img``), ``none`` (uncorrected p < alpha), or the
            desc of stored permutation maps: ``perm``, ``tfce``, ``cluster`` ...
            (uses the stored ``-log10 p`` map of that family, FWE-corrected
            when present).
        alpha : float, default 0.05
            Error rate.
        cluster_threshold : int, default 0
            Minimum cluster size in voxels.
        height : float, optional
            An explicit z threshold; overrides ``method`` / ``alpha``.
        two_sided : bool, default False
            Test both tails.
        subject : str, optional
            Threshold a subject's map instead of the group's.
        desc : str, optional
            Exact desc of the stored p map (non-parametric methods).

        Returns
        -------
        image : nibabel.Nifti1Image
            z map, zero below threshold.
        threshold : float
            The z threshold used (for stored p maps: the smallest surviving
            ``|z|``, ``inf`` when nothing survives).
        """
        from nilearn.glm import threshold_stats_img

        z_img = self.map(contrast, stat="z", subject=subject)
        mask_img = self._mask_for(z_img)
        if height is not None:
            return threshold_stats_img(z_img, mask_img=mask_img, threshold=height, height_control=None,
                                       cluster_threshold=cluster_threshold, two_sided=two_sided)
        key = method.lower()
        if key in _PARAMETRIC:
            return threshold_stats_img(z_img, mask_img=mask_img, alpha=alpha, height_control=_PARAMETRIC[key],
                                       cluster_threshold=cluster_threshold, two_sided=two_sided)
        p_path, stat = self._p_map(contrast, key, desc, subject)
        p_data = np.asarray(nib.load(p_path).dataobj, dtype=float)
        p_values = 10.0 ** -p_data if stat.startswith("logp") else p_data
        z = np.asarray(z_img.dataobj, dtype=float)
        keep = (p_values < alpha) & np.isfinite(z) & (z != 0)
        if not two_sided:
            keep &= z > 0
        data = np.where(keep, z, 0.0)
        if cluster_threshold > 0 and keep.any():
            from scipy import ndimage

            labels, _ = ndimage.label(keep)
            sizes = np.bincount(labels.ravel())
            data[(sizes[labels] < cluster_threshold) | (labels == 0)] = 0.0
        surviving = np.abs(data[data != 0])
        thr = float(surviving.min()) if surviving.size else float("inf")
        return nib.Nifti1Image(data.astype(np.float32), z_img.affine, z_img.header), thr

    def _p_map(self, contrast: str, method: str, desc: str | None, subject: str | None) -> tuple[Path, str]:
        level = "group" if subject is None else "subject"
        pool = self.maps(level=level, contrast=contrast)
        if subject is not None:
            pool = pool[pool["subject"] == _strip(subject, "sub")]
        pool = pool[pool["stat"].isin(_P_STATS) & pool["desc"].notna()]
        if desc is not None:
            pool = pool[pool["desc"] == desc]
        else:
            pool = pool[pool["desc"].str.lower().str.startswith(method)]
        if pool.empty:
            stored = self.maps(level=level, contrast=contrast)
            stored = stored[stored["stat"].isin(_P_STATS)]
            have = sorted(f"desc={d}, stat={s}" for d, s in stored[["desc", "stat"]].itertuples(index=False))
            raise KeyError(
                f"no stored p-value map for method {method!r} (desc={desc!r}) of contrast {contrast!r} "
                f"in {self.output_dir}; stored p maps: {have or 'none'}; parametric methods: "
                f"{sorted(_PARAMETRIC)}. Permutation maps exist only when the group level ran with "
                "inference.enabled."
            )

        def rank(row: pd.Series) -> tuple[int, int]:
            fwe = "fwe" in row["desc"].lower() or row["stat"].endswith("fwe")
            return (0 if fwe else 1, _P_STATS.index(row["stat"]))

        best = min(pool.itertuples(index=False), key=lambda r: rank(pd.Series(r._asdict())))
        return Path(best.path), best.stat

    def _mask_for(self, img: nib.Nifti1Image) -> nib.Nifti1Image:
        """The group mask on the image's grid, else the image's non-zero finite voxels."""
        mask = self.mask()
        if mask is not None and mask.shape[:3] == img.shape[:3] and np.allclose(mask.affine, img.affine):
            return nib.Nifti1Image((np.asarray(mask.dataobj) > 0).astype(np.uint8), img.affine)
        data = np.asarray(img.dataobj, dtype=float)
        return nib.Nifti1Image((np.isfinite(data) & (data != 0)).astype(np.uint8), img.affine)

    # ------------------------------------------------------------- compare
    def compare(self, contrast_a: str, contrast_b: str, stat: str = "z", threshold: float = 3.1,
                subject: str | None = None, two_sided: bool = False) -> dict[str, Any]:
        """Compare two maps of the same level.

        Parameters
        ----------
        contrast_a, contrast_b : str
            Contrast names.
        stat : str, default "z"
        threshold : float, default 3.1
            Height above which voxels count as active (``|value|`` if ``two_sided``).
        subject : str, optional
            Compare a subject's maps instead of the group's.

        Returns
        -------
        dict
            ``correlation`` (Pearson over voxels non-zero in either map),
            ``dice`` (of the suprathreshold sets; NaN if both are empty),
            ``n_active_a``, ``n_active_b``, ``n_overlap``, ``peak_a`` / ``peak_b``
            (MNI mm of the maximum), ``peak_distance_mm``.
        """
        img_a = self.map(contrast_a, stat=stat, subject=subject)
        img_b = self.map(contrast_b, stat=stat, subject=subject)
        if img_a.shape != img_b.shape or not np.allclose(img_a.affine, img_b.affine):
            raise ValueError(f"maps of {contrast_a!r} and {contrast_b!r} are on different grids")
        a = np.nan_to_num(np.asarray(img_a.dataobj, dtype=float))
        b = np.nan_to_num(np.asarray(img_b.dataobj, dtype=float))
        return compare_arrays(a, b, img_a.affine, threshold=threshold, two_sided=two_sided)

    # --------------------------------------------------------------- plots
    def _display_img(self, contrast: str, threshold: float | str | None, subject: str | None,
                     stat: str, alpha: float) -> tuple[nib.Nifti1Image, float | None]:
        if isinstance(threshold, str):
            return self.threshold(contrast, method=threshold, alpha=alpha, subject=subject)
        return self.map(contrast, stat=stat, subject=subject), threshold

    def plot(self, contrast: str, threshold: float | str | None = 3.1, kind: str = "stat",
             subject: str | None = None, stat: str = "z", alpha: float = 0.05, **kwargs: Any):
        """Static nilearn plot of a map.

        Parameters
        ----------
        contrast : str
        threshold : float or str, default 3.1
            A z height, or a method name (``"fdr"``, ``"fwe"``, ``"perm"`` ...)
            passed to :meth:`threshold` with ``alpha``.
        kind : {"stat", "glass"}
            ``nilearn.plotting.plot_stat_map`` or ``plot_glass_brain``.
        **kwargs
            Passed to the nilearn function (``display_mode``, ``cut_coords``, ``axes`` ...).

        Returns
        -------
        nilearn display object
        """
        from nilearn import plotting

        img, thr = self._display_img(contrast, threshold, subject, stat, alpha)
        title = kwargs.pop("title", f"{contrast} ({'group' if subject is None else 'sub-' + _strip(subject, 'sub')})")
        if thr is not None and not np.isfinite(thr):
            thr = None
            title += ": nothing survives"
        if kind == "stat":
            return plotting.plot_stat_map(img, threshold=thr, title=title, **kwargs)
        if kind == "glass":
            kwargs.setdefault("plot_abs", False)
            return plotting.plot_glass_brain(img, threshold=thr, title=title, **kwargs)
        raise ValueError(f"kind must be 'stat' or 'glass', got {kind!r}")

    def view(self, contrast: str, threshold: float | str | None = 3.1, subject: str | None = None,
             stat: str = "z", alpha: float = 0.05, **kwargs: Any):
        """Interactive ``nilearn.plotting.view_img`` of a map (renders in notebooks, ``.save_as_html``)."""
        from nilearn import plotting

        img, thr = self._display_img(contrast, threshold, subject, stat, alpha)
        if thr is not None and not np.isfinite(thr):
            thr = None
        kwargs.setdefault("title", contrast)
        return plotting.view_img(img, threshold=thr, **kwargs)

    # ------------------------------------------------------------- helpers
    def _check(self, what: str, value: Any, available: Iterable[Any], where: str | None = None) -> None:
        available = list(available)
        if value not in available:
            at = f" at {where}" if where else ""
            raise KeyError(f"no {what} {value!r}{at} in {self.output_dir}; available: {available}")


def compare_arrays(a: np.ndarray, b: np.ndarray, affine: np.ndarray, threshold: float = 3.1,
                   two_sided: bool = False) -> dict[str, Any]:
    """Overlap and similarity of two maps on the same grid (see :meth:`Results.compare`)."""
    support = (a != 0) | (b != 0)
    if support.sum() < 2:
        correlation = float("nan")
    else:
        correlation = float(np.corrcoef(a[support], b[support])[0, 1])
    act_a = (np.abs(a) if two_sided else a) > threshold
    act_b = (np.abs(b) if two_sided else b) > threshold
    n_a, n_b, n_ab = int(act_a.sum()), int(act_b.sum()), int((act_a & act_b).sum())
    dice = 2 * n_ab / (n_a + n_b) if n_a + n_b else float("nan")
    peak_a = nib.affines.apply_affine(affine, np.unravel_index(np.argmax(a), a.shape))
    peak_b = nib.affines.apply_affine(affine, np.unravel_index(np.argmax(b), b.shape))
    return {
        "correlation": correlation, "dice": dice, "n_active_a": n_a, "n_active_b": n_b,
        "n_overlap": n_ab, "threshold": threshold,
        "peak_a": tuple(float(v) for v in peak_a), "peak_b": tuple(float(v) for v in peak_b),
        "peak_distance_mm": float(np.linalg.norm(peak_a - peak_b)),
    }


def _read_tsv(path: Path | str) -> pd.DataFrame:
    try:
        return pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=True)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ValueError(f"cannot read table {path}: {exc}") from exc


def _strip(label: str | None, key: str) -> str | None:
    if label is None:
        return None
    label = str(label)
    return label[len(key) + 1:] if label.startswith(f"{key}-") else label


def _order_contrasts(names: Iterable[str]) -> list[str]:
    order = {n: i for i, n in enumerate(_CONTRAST_ORDER)}
    return sorted(set(names), key=lambda n: (order.get(n, len(order)), n))
