"""Figures for the reports, rendered to embedded PNG data URIs."""

from __future__ import annotations

import base64
import io
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
from nilearn import plotting  # noqa: E402


def figure_to_uri(fig) -> str:
    """A matplotlib figure as a ``data:image/png;base64`` URI; closes the figure."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def file_to_uri(path: Path | str) -> str:
    """A PNG file as a data URI."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def glass_brain_uri(img: nib.Nifti1Image | str | Path, title: str,
                    threshold: float | None = None, two_sided: bool = True) -> str:
    """Glass-brain view of a statistical map."""
    img = nib.load(img) if not isinstance(img, nib.Nifti1Image) else img
    data = np.nan_to_num(np.asanyarray(img.dataobj, dtype=float))
    vmax = float(np.abs(data).max()) or 1.0
    fig = plt.figure(figsize=(7, 2.6))
    if threshold is None or not np.isfinite(threshold):
        threshold = 3.1 if vmax > 3.1 else vmax / 2
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="empty mask")  # nothing survives: an empty brain
        plotting.plot_glass_brain(nib.Nifti1Image(data, img.affine), threshold=threshold,
                                  colorbar=True, plot_abs=not two_sided, vmax=vmax,
                                  title=title, figure=fig, cmap="cold_hot" if two_sided else "hot")
    return figure_to_uri(fig)


def design_matrix_uri(design) -> str:
    """nilearn's design-matrix plot of a DataFrame."""
    fig, ax = plt.subplots(figsize=(min(2 + 0.35 * design.shape[1], 12), 4))
    plotting.plot_design_matrix(design, axes=ax)
    return figure_to_uri(fig)
