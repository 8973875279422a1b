"""The pathway node table: its columns and vocabulary, reading and validation, hemispheres and constraints.

A node is a row of ``atlases/pain_pathways.tsv``: labels of a shipped atlas (or an MNI sphere),
a pathway, a hemisphere relative to the pain side (``contra``/``ipsi``) and optional coordinate
constraints (``abs(x)<=18``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

PATHWAYS = ("lateral", "medial", "descending", "control")
HEMISPHERES = ("contra", "ipsi", "midline", "bilateral", "L", "R")
PROBABILISTIC = ("juelich", "harvard_oxford")
LABEL_ATLASES = ("aal", "talairach_ba", "talairach_gyrus")
SOURCES = PROBABILISTIC + LABEL_ATLASES + ("sphere",)
NODE_COLUMNS = ("name", "pathway", "hemisphere", "source", "labels", "x", "y", "z",
                "radius_mm", "constraint", "reference")
_CONSTRAINT = re.compile(r"^\s*(abs\(([xyz])\)|[xyz])\s*(<=|>=|<|>)\s*(-?\d+(?:\.\d+)?)\s*$")


def read_node_table(path: Path | str) -> pd.DataFrame:
    """Read and validate a pathway node table.

    Raises
    ------
    ValueError
        Naming the file and the row for a missing column, unknown pathway,
        hemisphere or source, a sphere without centre/radius, a label node
        without labels, or a malformed constraint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pathway atlas table {path} does not exist")
    table = pd.read_csv(path, sep="\t", dtype=str, na_values=["n/a", ""], keep_default_na=False)
    missing = [c for c in NODE_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    if table["name"].duplicated().any():
        raise ValueError(f"{path}: duplicate node names {table['name'][table['name'].duplicated()].tolist()}")
    for i, row in table.iterrows():
        where = f"{path} row {i + 2} ({row['name']})"
        if row["pathway"] not in PATHWAYS:
            raise ValueError(f"{where}: pathway {row['pathway']!r} not in {PATHWAYS}")
        if row["hemisphere"] not in HEMISPHERES:
            raise ValueError(f"{where}: hemisphere {row['hemisphere']!r} not in {HEMISPHERES}")
        if row["source"] not in SOURCES:
            raise ValueError(f"{where}: source {row['source']!r} not in {SOURCES}")
        if row["source"] == "sphere":
            try:
                [float(row[c]) for c in ("x", "y", "z", "radius_mm")]
            except (TypeError, ValueError):
                raise ValueError(f"{where}: a sphere needs numeric x, y, z and radius_mm") from None
        elif pd.isna(row["labels"]):
            raise ValueError(f"{where}: source {row['source']} needs labels")
        for part in split_list(row["constraint"]):
            if not _CONSTRAINT.match(part):
                raise ValueError(f"{where}: constraint {part!r} is not like 'abs(x)<=18' or 'y>=0'")
    return table


def hemispheres_for(side: str, pain_side: str | None) -> tuple[str, ...]:
    """Anatomical hemispheres ("L", "R") of a node for a pain side.

    Pain on the right -> contralateral is the left hemisphere.
    """
    if side in ("L", "R"):
        return (side,)
    if side in ("midline", "bilateral"):
        return ("L", "R")
    pain_side = normalise_pain_side(pain_side)
    contra = "L" if pain_side == "right" else "R"
    ipsi = "R" if contra == "L" else "L"
    return (contra,) if side == "contra" else (ipsi,)


def normalise_pain_side(value, default: str = "right") -> str:
    """``"R"``, ``"Right"``, ``"right leg"`` ... -> ``"right"``; missing/bilateral -> default."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return default
    text = str(value).strip().lower()
    if text in ("r", "right", "rechts", "d", "dx") or text.startswith("right"):
        return "right"
    if text in ("l", "left", "links", "s", "sx") or text.startswith("left"):
        return "left"
    return default


def expand_labels(template: str, hemispheres: tuple[str, ...]) -> list[str]:
    out = []
    for label in split_list(template):
        if "{h}" in label or "{Hemi}" in label:
            for hemi in hemispheres:
                out.append(label.replace("{h}", hemi).replace("{Hemi}", "Left" if hemi == "L" else "Right"))
        else:
            out.append(label)
    return out


def split_list(value) -> list[str]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    return [p.strip() for p in str(value).split(";") if p.strip()]



def constraint_mask(constraint, xyz: np.ndarray) -> np.ndarray:
    mask = np.ones(xyz.shape[:3], dtype=bool)
    ops = {"<=": np.less_equal, ">=": np.greater_equal, "<": np.less, ">": np.greater}
    for part in split_list(constraint):
        m = _CONSTRAINT.match(part)
        axis = m.group(2) or m.group(1)
        values = xyz[..., "xyz".index(axis)]
        if m.group(2):
            values = np.abs(values)
        mask &= ops[m.group(3)](values, float(m.group(4)))
    return mask
