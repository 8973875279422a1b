"""Per-run quality control: tSNR, motion summary, carpet plot, registration overlay, report section."""
from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np
import pandas as pd
from nipype.algorithms.confounds import regress_poly


def tsnr(data: np.ndarray, skip: int = 0, mask: np.ndarray | None = None) -> np.ndarray:
    """Temporal SNR (mean / SD after removing a quadratic trend) of a 4D array; 0 where SD is 0.

    With ``mask`` (3D bool) only the voxels inside it are computed (0 outside): each voxel's
    value is the same as without the mask, at a fraction of the memory of the whole grid.
    """
    steady = data[..., skip:]
    flat = (steady.reshape(-1, steady.shape[-1]) if mask is None else steady[np.asarray(mask, bool)])
    flat = np.asarray(flat, dtype=np.float64)
    mean = flat.mean(axis=1)
    resid = regress_poly(2, flat, remove_mean=True)[0]
    del flat
    sd = resid.std(axis=1)
    vals = np.divide(mean, sd, out=np.zeros_like(mean), where=sd > 0).astype(np.float32)
    if mask is None:
        return vals.reshape(steady.shape[:3])
    out = np.zeros(steady.shape[:3], dtype=np.float32)
    out[np.asarray(mask, bool)] = vals
    return out


def qc_metrics(tsnr_map: np.ndarray, mask: np.ndarray, confounds: pd.DataFrame) -> dict:
    """Summary numbers of one run (tSNR median in the brain, FD, outliers)."""
    fd = confounds["framewise_displacement"].to_numpy(dtype=float)
    outliers = [c for c in confounds.columns if c.startswith("motion_outlier")]
    nss = [c for c in confounds.columns if c.startswith("non_steady_state_outlier")]
    return {
        "tsnr_median": float(np.median(tsnr_map[mask.astype(bool)])),
        "fd_mean": float(np.nanmean(fd)),
        "fd_max": float(np.nanmax(fd)),
        "n_outliers": len(outliers),
        "n_nonsteady": len(nss),
        "dvars_std_max": float(np.nanmax(confounds["std_dvars"].to_numpy(dtype=float))),
        "n_volumes": int(len(confounds)),
    }


def carpet_figure(bold_img, mask_img, confounds: pd.DataFrame, tr: float, title: str = ""):
    """FD / DVARS traces above nilearn's carpet plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from nilearn.plotting import plot_carpet

    fig = plt.figure(figsize=(9, 6))
    gs = fig.add_gridspec(3, 1, height_ratios=[1, 1, 4], hspace=0.35)
    t = np.arange(len(confounds)) * tr
    ax = fig.add_subplot(gs[0])
    ax.plot(t, confounds["framewise_displacement"], color="tab:red", lw=1)
    ax.set_ylabel("FD (mm)")
    ax.set_title(title, fontsize=10)
    ax.set_xlim(t[0], t[-1])
    ax = fig.add_subplot(gs[1])
    ax.plot(t, confounds["std_dvars"], color="tab:blue", lw=1)
    ax.set_ylabel("std DVARS")
    ax.set_xlim(t[0], t[-1])
    ax = fig.add_subplot(gs[2])
    plot_carpet(bold_img, mask_img, t_r=tr, axes=ax, figure=fig, standardize="zscore_sample")
    # nearest-neighbour resampling of the voxel x time image before colour mapping: the same
    # pixels as matplotlib's RGBA stage, without an RGBA float copy of every voxel (~4x the data)
    for axes in fig.axes:
        for image in axes.images:
            image.set_interpolation_stage("data")
    return fig


def overlay_figure(boldref_img, template_img, title: str = ""):
    """Mean EPI in MNI space with the template's edges drawn on top."""
    import matplotlib

    matplotlib.use("Agg")
    from nilearn import plotting

    display = plotting.plot_anat(boldref_img, display_mode="ortho", title=title, draw_cross=False,
                                 cut_coords=(0, -18, 18), dim=0)
    display.add_edges(template_img, color="r")
    return display.frame_axes.figure


def _embed_png(path: Path | str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" style="max-width:100%"/>'


def preproc_report_section(qc_outputs: list[dict]) -> str:
    """HTML fragment for ``sub-XX.html``: a QC table and, per run, the figures (embedded).

    Parameters
    ----------
    qc_outputs : list of dict
        One per run, as written by :func:`fmri_pain.preprocess.run.preprocess_subject`
        (keys ``run`` (label), ``metrics`` (dict), ``carpet`` and ``overlay``
        (PNG paths), ``route`` and ``notes``).
    """
    if not qc_outputs:
        return "<section class='preprocessing'><h2>Preprocessing</h2><p>No runs.</p></section>"
    rows = []
    for q in qc_outputs:
        m = q["metrics"]
        rows.append(
            f"<tr><td>{html.escape(q['run'])}</td><td>{m['tsnr_median']:.1f}</td><td>{m['fd_mean']:.3f}</td>"
            f"<td>{m['fd_max']:.3f}</td><td>{m['n_outliers']}</td><td>{m['n_nonsteady']}</td>"
            f"<td>{html.escape(q.get('route', ''))}</td></tr>"
        )
    parts = [
        "<section class='preprocessing'><h2>Preprocessing</h2>",
        "<table class='qc'><thead><tr><th>run</th><th>median tSNR</th><th>mean FD (mm)</th>"
        "<th>max FD (mm)</th><th>motion outliers</th><th>non-steady volumes</th><th>normalization</th>"
        "</tr></thead><tbody>",
        *rows,
        "</tbody></table>",
    ]
    for q in qc_outputs:
        parts.append(f"<h3>{html.escape(q['run'])}</h3>")
        for note in q.get("notes", []):
            parts.append(f"<p class='note'>{html.escape(note)}</p>")
        for key in ("overlay", "carpet"):
            if q.get(key) and Path(q[key]).exists():
                parts.append(f"<figure>{_embed_png(q[key])}<figcaption>{key}</figcaption></figure>")
    parts.append("</section>")
    return "\n".join(parts)
