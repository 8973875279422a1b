"""Condition-dependent connectivity between pathway nodes.

Two measures per run, averaged over the runs of a session:

- **gPPI** (McLaren et al. 2012 NeuroImage 61:1277): for every seed node, each
  target node's time series is modelled with the task design (ON block, drifts,
  6 motion parameters), the seed time series, and the psychophysiological
  interaction ``seed x (ON - mean ON)``; the interaction's beta is the change in
  seed-target coupling during stimulation. With a single task condition (ON vs
  the implicit OFF baseline) the generalized form reduces to one interaction
  term. The interaction is formed in the BOLD domain (no deconvolution), which
  is adequate for block designs (O'Reilly et al. 2012 SCAN 7:604). Time series
  are z-scored, so betas are in standardised units.
- **residual correlation**: Fisher-z correlations of the node residuals after the
  task design (background connectivity, Al-Aidroos et al. 2012 PNAS 109:14675).

PPI betas go through the crossover mixed model (:mod:`fmri_pain.pathways.stats`,
Satterthwaite df; one-sample t with ``n - 1`` df in a one-condition study);
residual correlations are tested per condition with one-sample t tests and
compared between conditions with paired t tests over subjects (``n - 1`` df; not
adjusted for period). FDR (Benjamini-Hochberg) is over node pairs, per contrast.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import stats

from fmri_pain.bids.naming import bids_filename
from fmri_pain.confound_names import CONNECTIVITY_CONFOUNDS as DEFAULT_CONFOUNDS
from fmri_pain.errors import InputError
from fmri_pain.pathways.atlas import PathwayAtlas, atlas_on_grid
from fmri_pain.pathways.nodes import normalise_pain_side
from fmri_pain.pathways.stats import add_fdr, fit_crossover, model_contrasts
from fmri_pain.trial import CONDITIONS

SESSION_KEYS = ("subject", "session", "condition", "period", "sequence")
PPI_STAT_COLUMNS = ("seed", "target", "contrast", "stat_type", "estimate", "se", "ci_low", "ci_high",
                    "stat", "df", "df_num", "df_method", "p", "n_subjects", "n_obs", "model")
CORRELATION_STAT_COLUMNS = ("node_a", "node_b", "contrast", "stat_type", "estimate", "stat", "df",
                            "df_method", "p", "n_subjects")


def _where(run) -> str:
    return f"sub-{run.subject}" + (f" ses-{run.session}" if run.session else "")


def run_design(run, n_scans: int, *, on_trial_type: str = "on", hrf_model: str = "spm",
               drift_model: str = "cosine", high_pass: float = 0.008,
               confounds: Sequence[str] = DEFAULT_CONFOUNDS) -> pd.DataFrame:
    """nilearn design matrix of one run: ON block, confounds, drifts, constant.

    ``confounds`` are columns of the run's fMRIPrep confounds TSV; by default the 6
    motion parameters plus the mean CSF and white-matter signals, which carry the
    global fluctuations that would otherwise couple every pair of nodes.
    """
    from nilearn.glm.first_level import make_first_level_design_matrix

    tr = float(run.metadata.get("RepetitionTime", 0) or 0)
    if tr <= 0:
        raise ValueError(f"{_where(run)}: RepetitionTime missing from the metadata of {run.bold}")
    frame_times = np.arange(n_scans) * tr + float(run.metadata.get("StartTime", 0.0) or 0.0)
    if run.events is None:
        raise ValueError(f"{_where(run)}: no events.tsv for {run.bold}")
    events = pd.read_csv(run.events, sep="\t")
    if not {"onset", "duration", "trial_type"} <= set(events.columns):
        raise ValueError(f"{run.events} ({_where(run)}) needs onset, duration and trial_type columns")
    events = events[events["trial_type"].astype(str) == on_trial_type][["onset", "duration", "trial_type"]]
    if events.empty:
        raise ValueError(f"{run.events} ({_where(run)}) has no trial_type {on_trial_type!r} events")
    regs, names = None, None
    cosines = [c for c in confounds if str(c).startswith("cosine")]
    if cosines and drift_model not in (None, "none"):  # one high-pass basis per design
        raise ValueError(f"connectivity confounds {cosines} are a second high-pass basis beside the "
                         f"{drift_model} drift model ({_where(run)}): list one or the other")
    if run.confounds is not None:
        conf = pd.read_csv(run.confounds, sep="\t")
        missing = [c for c in confounds if c not in conf.columns]
        if missing:
            raise ValueError(f"{run.confounds} ({_where(run)}) lacks confound columns {missing}")
        if len(conf) != n_scans:
            raise ValueError(f"{run.confounds} ({_where(run)}) has {len(conf)} rows for {n_scans} volumes")
        regs = conf[list(confounds)].fillna(0.0).to_numpy()
        names = list(confounds)
    return make_first_level_design_matrix(frame_times, events, hrf_model=hrf_model,
                                          drift_model=drift_model, high_pass=high_pass,
                                          add_regs=regs, add_reg_names=names)


def resolve_on_trial_type(run, on_trial_type: str) -> str:
    """The ON trial type of a run's events: ``on_trial_type``, else its single active trial type.

    As the first level's ``stim`` contrast of a one-condition study, trial types
    other than baseline-like ones (off, rest, baseline, fixation) are active; a
    run without ``on_trial_type`` but with exactly one active trial type uses it.

    Raises
    ------
    InputError
        No events file, no trial_type column, or no unique ON trial type.
    """
    from fmri_pain.glm.first_level.events import BASELINE_TRIAL_TYPES

    if run.events is None:
        raise InputError(f"no events.tsv for {run.bold}", subject=run.subject)
    try:
        events = pd.read_csv(run.events, sep="\t")
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the events: {exc}", subject=run.subject, path=run.events) from exc
    if "trial_type" not in events.columns:
        raise InputError("events have no trial_type column", subject=run.subject, path=run.events)
    types = list(dict.fromkeys(events["trial_type"].dropna().astype(str)))
    if on_trial_type in types:
        return on_trial_type
    active = [t for t in types if t.lower() not in BASELINE_TRIAL_TYPES]
    if len(active) == 1:
        return active[0]
    raise InputError(f"no trial_type {on_trial_type!r} and {len(active)} active trial types {active}: "
                     "name the ON trial type in the spec", subject=run.subject, path=run.events)


def node_timeseries(run, atlas: PathwayAtlas) -> tuple[np.ndarray, list[str]]:
    """(time x nodes) mean BOLD of the atlas nodes in one run (NiftiLabelsMasker)."""
    from nilearn.maskers import NiftiLabelsMasker

    try:
        bold = nib.load(str(run.bold))
        shape = bold.shape
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"cannot read the BOLD {run.bold} of {_where(run)}: {exc}") from exc
    if len(shape) != 4:
        raise ValueError(f"BOLD {run.bold} of {_where(run)} is not 4D: {shape}")
    grid_atlas = atlas_on_grid(atlas, bold)
    masker = NiftiLabelsMasker(labels_img=grid_atlas.img, mask_img=run.mask, standardize=None,
                               resampling_target="data")
    series = masker.fit_transform(bold)
    ids = _region_ids(masker, series.shape[1])
    lookup = grid_atlas.nodes.set_index("index")["name"]
    names = [lookup.get(int(i)) for i in ids]
    keep = [k for k, n in enumerate(names) if n is not None]
    return series[:, keep], [names[k] for k in keep]


def _region_ids(masker, n: int) -> list[int]:
    ids = getattr(masker, "region_ids_", None)
    if isinstance(ids, dict):
        values = [v for k, v in ids.items() if k != "background"]
    elif ids is not None:
        values = [v for v in ids if v != 0]
    else:
        values = list(range(1, n + 1))
    if len(values) != n:
        raise RuntimeError(f"NiftiLabelsMasker returned {n} regions for {len(values)} region ids")
    return [int(v) for v in values]


def _zscore(x: np.ndarray) -> np.ndarray:
    sd = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def ppi_betas(series: np.ndarray, design: pd.DataFrame, on: str, names: Sequence[str],
              seeds: Sequence[str] | None = None, noise_model: str = "ar1") -> pd.DataFrame:
    """gPPI interaction betas for every seed -> target pair of one run.

    Parameters
    ----------
    series : array (time, nodes)
    design : DataFrame
        Task design with the ON column ``on`` (plus confounds, drifts, constant).
    names : node names of the columns of ``series``.
    seeds : nodes used as seeds (default all).

    Returns
    -------
    DataFrame with seed, target, beta (interaction), t (interaction t).
    """
    from nilearn.glm.first_level import run_glm

    y = _zscore(series)
    psych = design[on].to_numpy()
    psych = psych - psych.mean()
    rows = []
    for s, seed in enumerate(names):
        if seeds and seed not in seeds:
            continue
        seed_ts = y[:, s]
        x = np.column_stack([design.to_numpy(), seed_ts, psych * seed_ts])
        targets = [k for k in range(len(names)) if k != s]
        labels, results = run_glm(y[:, targets], x, noise_model=noise_model)
        beta = np.empty(len(targets))
        tval = np.empty(len(targets))
        for lab, res in results.items():
            sel = labels == lab
            beta[sel] = res.theta[-1]
            tval[sel] = res.t(-1)
        rows += [{"seed": seed, "target": names[k], "beta": float(b), "t": float(t)}
                 for k, b, t in zip(targets, beta, tval)]
    return pd.DataFrame(rows)


def residual_correlation(series: np.ndarray, design: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """Fisher-z correlations of node residuals after the task design (long: node_a, node_b, z)."""
    x = design.to_numpy()
    beta, *_ = np.linalg.lstsq(x, series, rcond=None)
    resid = series - x @ beta
    r = np.corrcoef(resid.T)
    rows = []
    for a, b in itertools.combinations(range(len(names)), 2):
        rows.append({"node_a": names[a], "node_b": names[b],
                     "z": float(np.arctanh(np.clip(r[a, b], -0.999999, 0.999999)))})
    return pd.DataFrame(rows)


def run_connectivity(runs: Sequence, atlas_for: Callable[[str], PathwayAtlas], *,
                     on_trial_type: str = "on", hrf_model: str = "spm", drift_model: str = "cosine",
                     high_pass: float = 0.008, seeds: Sequence[str] = (),
                     confounds: Sequence[str] = DEFAULT_CONFOUNDS,
                     default_pain_side: str = "right") -> tuple[pd.DataFrame, pd.DataFrame]:
    """gPPI betas and residual correlations of every run, averaged per session.

    Returns
    -------
    ppi : DataFrame
        subject, session, condition, period, sequence, seed, target, beta, t.
    correlation : DataFrame
        subject, session, condition, period, sequence, node_a, node_b, z.
    """
    ppi_frames, corr_frames = [], []
    for run in runs:
        side = normalise_pain_side(run.covariates.get("pain_side"), default_pain_side)
        atlas = atlas_for(side)
        on = resolve_on_trial_type(run, on_trial_type)
        series, names = node_timeseries(run, atlas)
        design = run_design(run, series.shape[0], on_trial_type=on, hrf_model=hrf_model,
                            drift_model=drift_model, high_pass=high_pass, confounds=confounds)
        ids = {"subject": run.subject, "session": run.session, "condition": run.condition,
               "period": run.period, "sequence": run.sequence, "run": run.run, "on_trial_type": on}
        ppi = ppi_betas(series, design, on, names, seeds or None)
        corr = residual_correlation(series, design, names)
        ppi_frames.append(ppi.assign(**ids))
        corr_frames.append(corr.assign(**ids))
    keys = list(SESSION_KEYS) + ["on_trial_type"]
    ppi = pd.concat(ppi_frames, ignore_index=True)
    corr = pd.concat(corr_frames, ignore_index=True)
    ppi = ppi.groupby(keys + ["seed", "target"], dropna=False, sort=False)[["beta", "t"]].mean().reset_index()
    corr = corr.groupby(keys + ["node_a", "node_b"], dropna=False, sort=False)["z"].mean().reset_index()
    return ppi, corr


def ppi_statistics(ppi: pd.DataFrame, *, conditions: tuple[str, ...] = CONDITIONS,
                   alpha: float = 0.05) -> pd.DataFrame:
    """The crossover mixed model on the PPI betas of every seed -> target pair."""
    rows = []
    for (seed, target), data in ppi.groupby(["seed", "target"], sort=False):
        data = data.rename(columns={"beta": "value"})
        fit = fit_crossover(data, "value", conditions=conditions)
        for row in model_contrasts(fit, alpha):
            rows.append({"seed": seed, "target": target, **row, "n_subjects": fit["n_subjects"],
                         "n_obs": fit["n_obs"], "model": fit["model"]})
    return add_fdr(pd.DataFrame(rows, columns=list(PPI_STAT_COLUMNS)), ["contrast"])


def correlation_statistics(corr: pd.DataFrame, *, conditions: tuple[str, ...] = CONDITIONS) -> pd.DataFrame:
    """Per edge: mean Fisher z per condition and paired t tests between conditions."""
    present = [c for c in conditions if c in set(corr["condition"])]
    rows = []
    for (a, b), data in corr.groupby(["node_a", "node_b"], sort=False):
        wide = data.pivot_table(index="subject", columns="condition", values="z")
        for cond in present:
            z = wide[cond].dropna()
            t, p = stats.ttest_1samp(z, 0.0) if len(z) > 1 else (np.nan, np.nan)
            rows.append({"node_a": a, "node_b": b, "contrast": cond.lower(), "stat_type": "t",
                         "estimate": float(z.mean()), "stat": float(t), "df": len(z) - 1,
                         "df_method": "one-sample", "p": float(p), "n_subjects": len(z)})
        for first, second in itertools.combinations(present, 2):
            pair = wide[[first, second]].dropna()
            diff = pair[second] - pair[first]
            t, p = stats.ttest_rel(pair[second], pair[first]) if len(pair) > 1 else (np.nan, np.nan)
            rows.append({"node_a": a, "node_b": b,
                         "contrast": f"{second.lower()}Minus{first.lower().capitalize()}",
                         "stat_type": "t", "estimate": float(diff.mean()), "stat": float(t),
                         "df": len(pair) - 1, "df_method": "paired", "p": float(p),
                         "n_subjects": len(pair)})
    return add_fdr(pd.DataFrame(rows, columns=list(CORRELATION_STAT_COLUMNS)), ["contrast"])


def label_nodes(display, names: list[str], coords: np.ndarray) -> None:
    """Each node's name beside it on the axial view of a nilearn connectome (mm coordinates)."""
    from matplotlib.patheffects import withStroke

    axes = getattr(display, "axes", {}).get("z")
    if axes is None:
        return
    for name, (x, y, _) in zip(names, coords):
        axes.ax.annotate(name, (x, y), xytext=(3, 2), textcoords="offset points", fontsize=6.5,
                         color="#1a1a1a", zorder=20, path_effects=[withStroke(linewidth=2, foreground="white")])


def plot_connectomes(ppi: pd.DataFrame, atlas: PathwayAtlas, output_dir: Path,
                     *, conditions: tuple[str, ...] = CONDITIONS) -> dict[str, Path]:
    """One connectome figure per condition: group-mean PPI betas (symmetrised)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from nilearn import plotting

    from fmri_pain.bids.derivatives import write_figure

    nodes = atlas.nodes[atlas.nodes["n_voxels"] > 0].set_index("name")
    names = [n for n in nodes.index if n in set(ppi["seed"]) | set(ppi["target"])]
    coords = nodes.loc[names, ["x", "y", "z"]].to_numpy(dtype=float)
    paths = {}
    for cond in [c for c in conditions if c in set(ppi["condition"])]:
        mean = ppi[ppi["condition"] == cond].groupby(["seed", "target"])["beta"].mean()
        mat = np.zeros((len(names), len(names)))
        for (s, t), v in mean.items():
            if s in names and t in names:
                mat[names.index(s), names.index(t)] += v / 2
                mat[names.index(t), names.index(s)] += v / 2
        fig = plt.figure(figsize=(9, 3.5))
        vmax = float(np.abs(mat).max()) or 1.0
        # the strongest 20 % of the edges; all of them when that leaves none (few nodes): nilearn
        # fails drawing the colorbar of a connectome without edges
        edges = np.abs(mat[np.triu_indices(len(names), 1)])
        threshold = float(np.percentile(edges, 80)) if edges.size else 0.0
        if not np.any(edges > threshold):
            threshold = 0.0
        display = plotting.plot_connectome(mat, coords, edge_threshold=threshold, figure=fig,
                                           title=f"gPPI {cond} (group mean beta)", edge_vmin=-vmax,
                                           edge_vmax=vmax, colorbar=bool(np.any(edges > threshold)),
                                           node_size=20)
        label_nodes(display, names, coords)
        paths[cond] = write_figure(fig, output_dir / bids_filename({"condition": cond.lower()}, "connectome", ".png"))
        plt.close(fig)
    return paths




