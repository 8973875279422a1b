"""HTML of the written tables: a TSV as a table, its sidecar's description, an embedded figure;
long tables collapsed to their significant rows with the full table one click away."""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from fmri_pain.report.figures import file_to_uri

ALPHA = 0.05
"""Level of the rows a collapsed table shows (FDR-adjusted p below it)."""
TOP = 10
"""Rows shown when none is significant; a table of at most this many rows is never collapsed."""
MAX_SHOWN = 25
"""At most this many significant rows are shown open (the smallest p first)."""


def _p_columns(df: pd.DataFrame) -> tuple[str | None, str | None]:
    """The table's FDR-adjusted p column and its unadjusted p column (None when absent)."""
    fdr = next((c for c in df.columns if "fdr" in str(c).lower()), None)
    p = next((c for c in df.columns if "fdr" not in str(c).lower()
              and (c == "p" or str(c).startswith("p_") or str(c).endswith("_p"))), None)
    return fdr, p


def _by_p(df: pd.DataFrame, column: str | None) -> pd.DataFrame:
    if column is None:
        return df
    order = pd.to_numeric(df[column], errors="coerce").sort_values(kind="stable", na_position="last")
    return df.loc[order.index]


def significant_rows(df: pd.DataFrame, alpha: float = ALPHA, top: int = TOP,
                     max_shown: int = MAX_SHOWN) -> tuple[pd.DataFrame, str]:
    """The rows of ``df`` a reader should see first, and a caption saying which they are.

    Rows with an FDR-adjusted p (the first column whose name contains ``fdr``)
    below ``alpha``, the smallest first and at most ``max_shown`` of them; when
    none is, the ``top`` rows of smallest p (or the first ``top`` rows of a table
    without p values).
    """
    fdr, p = _p_columns(df)
    if fdr is not None:
        sig = _by_p(df[pd.to_numeric(df[fdr], errors="coerce") < alpha], fdr)
        if not sig.empty:
            shown = sig.head(max_shown)
            more = f"the {len(shown)} smallest of " if len(shown) < len(sig) else ""
            return shown, f"{more}{len(sig)} of {len(df)} rows with {fdr} &lt; {alpha:g}"
    none = f"no row with {fdr} &lt; {alpha:g}; " if fdr is not None else ""
    key = fdr if p is None else p
    if key is None:
        return df.head(top), f"the first {min(top, len(df))} of {len(df)} rows"
    return _by_p(df, key).head(top), f"{none}the {min(top, len(df))} of {len(df)} rows with the smallest {key}"


def collapsed(df: pd.DataFrame, render: Callable[[pd.DataFrame], str], alpha: float = ALPHA,
              top: int = TOP) -> str:
    """HTML of a table: short ones whole; long ones their significant rows, the rest in ``<details>``.

    Parameters
    ----------
    df : DataFrame
    render : callable
        DataFrame -> HTML table.
    alpha, top : float, int
        See :func:`significant_rows`.
    """
    if len(df) <= top:
        return str(render(df))
    shown, caption = significant_rows(df, alpha, top)
    return (f"<p class='small'>Shown: {caption}.</p>{render(shown)}"
            f"<details class='more'><summary>Full table ({len(df)} rows)</summary>{render(df)}"
            "</details>")


FIGURE_WIDTH = 900
"""Widest embedded figure (pixels): wider PNGs are scaled down."""


def img_tag(path: Path, alt: str) -> str:
    """A PNG embedded (palette-compressed) as a base64 ``<figure>`` with ``alt`` as its caption."""
    return f'<figure><img alt="{html.escape(alt)}" src="{file_to_uri(path, FIGURE_WIDTH)}"/>' \
           f"<figcaption>{html.escape(alt)}</figcaption></figure>"


def _to_html(df: pd.DataFrame) -> str:
    return df.to_html(index=False, float_format=lambda v: f"{v:.3g}", na_rep="",
                      classes="table pathways", border=0)


def tsv_table(path: Path, query=None, columns=None, max_rows: int = 60,
              collapse: bool = False) -> str:
    """A TSV as an HTML table: rows ``query(df)`` selects, ``columns`` kept, ``max_rows`` shown.

    With ``collapse``, a long table shows its significant rows and the
    (``max_rows``) rest behind a click (:func:`collapsed`).
    """
    df = pd.read_csv(path, sep="\t", na_values="n/a")
    if query is not None:
        df = query(df)
    if columns:
        df = df[[c for c in columns if c in df.columns]]
    return collapsed(df.head(max_rows), _to_html) if collapse else _to_html(df.head(max_rows))


def description(path: Path) -> str:
    """The ``Description`` of a table's JSON sidecar (empty when there is none)."""
    sidecar = Path(path).with_suffix(".json")
    try:
        return str(json.loads(sidecar.read_text()).get("Description", ""))
    except (OSError, ValueError):
        return ""


def described_table(path: Path, heading: str, query, columns: list[str], level: int = 3,
                    max_rows: int = 60, collapse: bool = False) -> list[str]:
    """A heading, the table's sidecar description (the model that ran) and the table."""
    return [f"<h{level}>{heading}</h{level}>", f"<p>{html.escape(description(path))}.</p>",
            tsv_table(path, query, columns, max_rows, collapse)]
