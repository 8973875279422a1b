"""The files table of an fmri-pain output folder: every BIDS-named output by level and entities."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from fmri_pain.bids.naming import parse_bids_name

COLUMNS = ("level", "subject", "session", "task", "run", "space", "contrast", "desc", "stat",
           "suffix", "extension", "path")
"""Columns of the files table."""


def index_outputs(output_dir: Path) -> pd.DataFrame:
    """One row per BIDS-named file under ``output_dir`` (``logs/``, ``work/`` and dot files left out).

    ``level`` is ``group`` under ``group/``, else ``run``, ``session`` or ``subject`` by the
    most specific entity of the name; names without ``sub-`` outside ``group/`` are skipped.
    """
    rows = []
    for path in sorted(output_dir.rglob("*")):
        rel = path.relative_to(output_dir)
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
    return pd.DataFrame(rows, columns=list(COLUMNS)).astype(object)


def select(files: pd.DataFrame, **criteria: Any) -> pd.DataFrame:
    """Rows of ``files`` matching every criterion: None (missing), a collection (any of) or a value."""
    df = files
    for key, value in criteria.items():
        if value is None:
            df = df[df[key].isna()]
        elif isinstance(value, (set, tuple, list)):
            df = df[df[key].isin(list(value))]
        else:
            df = df[df[key] == value]
    return df


def read_tsv(path: Path | str) -> pd.DataFrame:
    """A TSV output as a DataFrame (``n/a`` as missing); ValueError when it cannot be read."""
    try:
        return pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=True)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ValueError(f"cannot read table {path}: {exc}") from exc


def strip_label(label: str | None, key: str) -> str | None:
    """``"sub-01"`` -> ``"01"`` for ``key="sub"``; None stays None."""
    if label is None:
        return None
    label = str(label)
    return label[len(key) + 1:] if label.startswith(f"{key}-") else label
