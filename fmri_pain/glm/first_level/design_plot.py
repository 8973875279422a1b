"""The design matrix plot of a run, as PNG bytes, drawn in a thread while the BOLD is read.

Drawing nilearn's ``plot_design_matrix`` and encoding the PNG (mostly the
column labels' text) costs about as much CPU as the run's GLM fit. With a
thread budget above 1 the plot is drawn in memory in a thread of its own from
the moment the design exists (before the BOLD is read) and written only with
the run's other outputs, so a run that fails writes nothing.
"""

from __future__ import annotations

import io
import threading

import pandas as pd

# matplotlib's figures are not meant to be drawn in several threads at once
_DRAW_LOCK = threading.Lock()


def design_png(design: pd.DataFrame) -> bytes:
    """PNG of a design matrix: nilearn's ``plot_design_matrix``, one column label per regressor.

    Parameters
    ----------
    design : DataFrame
        Rows: volumes; columns: regressors (their names label the plot).

    Returns
    -------
    bytes
    """
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure registry
    from nilearn.plotting import plot_design_matrix

    with _DRAW_LOCK:
        fig = Figure(figsize=(max(4.0, 0.25 * design.shape[1] + 2), 7))
        plot_design_matrix(design, axes=fig.add_subplot())
        fig.subplots_adjust(top=0.72, bottom=0.04, left=0.08, right=0.98)  # room for column names
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100)  # bbox_inches="tight" would draw twice
    return buffer.getvalue()


class DesignPlot:
    """A design's PNG, drawn in a daemon thread started at construction.

    Parameters
    ----------
    design : DataFrame

    Examples
    --------
    >>> plot = DesignPlot(design)   # doctest: +SKIP
    >>> png = plot.result()         # waits for the drawing; raises what it raised
    """

    def __init__(self, design: pd.DataFrame) -> None:
        self._design = design
        self._png: bytes | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._draw, name="first-level-design-plot", daemon=True)
        self._thread.start()

    def _draw(self) -> None:
        try:
            self._png = design_png(self._design)
        except BaseException as exc:  # raised in the caller's thread by result()
            self._error = exc

    def result(self) -> bytes:
        """The PNG bytes (waits for the thread); the drawing's exception if it failed."""
        self._thread.join()
        if self._png is None:
            raise self._error or RuntimeError("the design plot's thread stopped without a result")
        return self._png
