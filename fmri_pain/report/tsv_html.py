"""HTML of the written tables: a TSV as a table, its sidecar's description, an embedded figure."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import pandas as pd


def img_tag(path: Path, alt: str) -> str:
    """A PNG embedded as a base64 ``<figure>`` with ``alt`` as its caption."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"/>' \
           f"<figcaption>{html.escape(alt)}</figcaption></figure>"


def tsv_table(path: Path, query=None, columns=None, max_rows: int = 60) -> str:
    """A TSV as an HTML table: rows ``query(df)`` selects, ``columns`` kept, ``max_rows`` shown."""
    df = pd.read_csv(path, sep="\t", na_values="n/a")
    if query is not None:
        df = query(df)
    if columns:
        df = df[[c for c in columns if c in df.columns]]
    return df.head(max_rows).to_html(index=False, float_format=lambda v: f"{v:.3g}", na_rep="",
                                     classes="table pathways", border=0)


def description(path: Path) -> str:
    """The ``Description`` of a table's JSON sidecar (empty when there is none)."""
    sidecar = Path(path).with_suffix(".json")
    try:
        return str(json.loads(sidecar.read_text()).get("Description", ""))
    except (OSError, ValueError):
        return ""


def described_table(path: Path, heading: str, query, columns: list[str], level: int = 3,
                    max_rows: int = 60) -> list[str]:
    """A heading, the table's sidecar description (the model that ran) and the table."""
    return [f"<h{level}>{heading}</h{level}>", f"<p>{html.escape(description(path))}.</p>",
            tsv_table(path, query, columns, max_rows)]
