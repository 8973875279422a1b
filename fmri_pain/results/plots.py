"""Static and interactive nilearn displays of a (thresholded) map for the analyst API.

:func:`plot_map` and :func:`view_map` draw an image; the :class:`Plotting` methods of
:class:`~fmri_pain.results.api.Results` pick the stored map to draw.
"""

from __future__ import annotations

from typing import Any

import nibabel as nib
import numpy as np

from fmri_pain.results.index import strip_label


def plot_map(img: nib.Nifti1Image, threshold: float | None, title: str, kind: str = "stat",
             **kwargs: Any):
    """``nilearn.plotting.plot_stat_map`` (``kind="stat"``) or ``plot_glass_brain`` (``"glass"``).

    An infinite ``threshold`` (nothing survived) shows the map unthresholded, said in the title.
    """
    from nilearn import plotting

    if threshold is not None and not np.isfinite(threshold):
        threshold = None
        title += ": nothing survives"
    if kind == "stat":
        return plotting.plot_stat_map(img, threshold=threshold, title=title, **kwargs)
    if kind == "glass":
        kwargs.setdefault("plot_abs", False)
        return plotting.plot_glass_brain(img, threshold=threshold, title=title, **kwargs)
    raise ValueError(f"kind must be 'stat' or 'glass', got {kind!r}")


def view_map(img: nib.Nifti1Image, threshold: float | None, **kwargs: Any):
    """Interactive ``nilearn.plotting.view_img``; an infinite ``threshold`` shows the map unthresholded."""
    from nilearn import plotting

    if threshold is not None and not np.isfinite(threshold):
        threshold = None
    return plotting.view_img(img, threshold=threshold, **kwargs)


class Plotting:
    """Methods of :class:`~fmri_pain.results.api.Results` that display its maps (through its
    ``map`` and ``threshold``)."""

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
        img, thr = self._display_img(contrast, threshold, subject, stat, alpha)
        title = kwargs.pop("title", f"{contrast} ({'group' if subject is None else 'sub-' + strip_label(subject, 'sub')})")
        return plot_map(img, thr, title, kind, **kwargs)

    def view(self, contrast: str, threshold: float | str | None = 3.1, subject: str | None = None,
             stat: str = "z", alpha: float = 0.05, **kwargs: Any):
        """Interactive ``nilearn.plotting.view_img`` of a map (renders in notebooks, ``.save_as_html``)."""
        img, thr = self._display_img(contrast, threshold, subject, stat, alpha)
        kwargs.setdefault("title", contrast)
        return view_map(img, thr, **kwargs)
