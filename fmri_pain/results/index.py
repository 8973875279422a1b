"""The files table of an fmri-pain output folder: every BIDS-named output by level and entities (pybids)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from fmri_pain.bids.naming import PYBIDS_ENTITIES, parse_bids_name, pybids_config_path

COLUMNS = ("level", "subject", "session", "task", "run", "space", "contrast", "desc", "stat",
           "suffix", "extension", "path")
"""Columns of the files table."""

_IGNORED = re.compile(r"^/(code|models|sourcedata|stimuli|logs|work)(/|$)")


def output_layout(output_dir: Path | str):
    """A pybids ``BIDSLayout`` of an output folder, with this package's entities.

    Configured with pybids' ``bids`` and ``derivatives`` entities and
    :func:`~fmri_pain.bids.naming.pybids_config_path` (``contrast``, ``stat``,
    ``condition``), without validation or metadata; ``logs/`` and ``work/`` are not indexed.

    Examples
    --------
    >>> layout = output_layout("demo-output")                         # doctest: +SKIP
    >>> layout.get(contrast="dualMinusScs", stat="z", return_type="file")  # doctest: +SKIP
    """
    from bids import BIDSLayout, BIDSLayoutIndexer

    indexer = BIDSLayoutIndexer(validate=False, index_metadata=False, ignore=[_IGNORED])
    return BIDSLayout(Path(output_dir).resolve(), config=["bids", "derivatives", str(pybids_config_path())],
                      validate=False, derivatives=False, indexer=indexer)


def index_outputs(output_dir: Path) -> pd.DataFrame:
    """One row per BIDS-named file under ``output_dir`` (``logs/``, ``work/`` and dot files left out).

    The files and their entities come from :func:`output_layout` (pybids); a file is kept when
    its name follows the ``key-value_..._suffix.ext`` pattern of
    :func:`~fmri_pain.bids.naming.parse_bids_name`. ``level`` is ``group`` under ``group/``,
    else ``run``, ``session`` or ``subject`` by the most specific entity of the name; names
    without ``sub-`` outside ``group/`` are skipped.
    """
    from bids.layout.models import Tag
    from sqlalchemy import select  # pybids' own database; one query for every tag

    output_dir = Path(output_dir)
    layout = output_layout(output_dir)
    root = Path(layout.root)
    tags: dict[str, dict[str, str]] = {}
    for file_path, entity, value in layout.connection_manager.session.execute(
            select(Tag.file_path, Tag.entity_name, Tag._value)):
        key = PYBIDS_ENTITIES.get(entity)
        if key is not None:
            tags.setdefault(file_path, {})[key] = str(value)
    rows = []
    for file_path in sorted(tags):
        rel = Path(file_path).relative_to(root)
        if parse_bids_name(rel.name) is None:
            continue
        ents = tags[file_path]
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
            "suffix": ents.get("suffix"), "extension": ents.get("extension"),
            "path": output_dir / rel,
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
