"""The between-subject sequence test per node and pathway, with subjects permuted across sequences.

Each subject's mean over its conditions is compared across treatment sequences by a
one-way F test (parametric p from F(g - 1, n - g)) and by permutation of the
subjects' sequence labels (whole subjects are the exchangeable units of a
between-subject effect). The permutation p is ``(1 + #{F* >= F}) / (1 + n_perm)``
with the identity among the rearrangements; when the distinct assignments of the
labels are no more than ``n_perm + 1`` they are all enumerated once (an exact test),
so no p is below ``1 / (number of distinct rearrangements)``.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pandas as pd
from scipy import special

from fmri_pain.pathways.stats import add_fdr
from fmri_pain.pathways.units import analysis_units

SEQUENCE_COLUMNS = ("level", "node", "pathway", "contrast", "stat", "df_num", "df", "p", "p_perm",
                    "p_perm_fdr", "n_perm", "exhaustive", "n_subjects", "n_sequences", "note")


def one_way_f(y: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """One-way ANOVA F of ``y`` (n, ...) across groups, for each row of ``labels`` (r, n).

    Returns an array (r, ...) of F statistics.
    """
    y = np.asarray(y, dtype=float)
    labels = np.atleast_2d(labels)
    n = y.shape[0]
    groups = np.unique(labels[0])
    g = len(groups)
    total = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    between = np.zeros((labels.shape[0],) + y.shape[1:])
    for grp in groups:
        member = (labels == grp).astype(float)  # (r, n)
        count = member.sum(axis=1).reshape((-1,) + (1,) * (y.ndim - 1))
        mean = np.tensordot(member, y, axes=(1, 0)) / count
        between += count * (mean - y.mean(axis=0)) ** 2
    within = total - between
    return (between / (g - 1)) / (within / (n - g))


def distinct_assignments(labels: np.ndarray) -> int:
    """Number of distinct rearrangements of ``labels`` (the multinomial coefficient)."""
    counts = Counter(labels.tolist())
    out = math.factorial(len(labels))
    for c in counts.values():
        out //= math.factorial(c)
    return out


def label_rearrangements(labels: np.ndarray, n_perm: int,
                         rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """Rearranged label vectors, the observed one first: all distinct ones, or ``n_perm`` random.

    Returns
    -------
    (rearrangements (r, n), exhaustive)
    """
    labels = np.asarray(labels)
    if distinct_assignments(labels) <= n_perm + 1:
        others = [p for p in _multiset_permutations(labels.tolist()) if p != labels.tolist()]
        return np.array([labels.tolist()] + others, dtype=labels.dtype), True
    draws = np.stack([labels] + [rng.permutation(labels) for _ in range(n_perm)])
    return draws, False


def _multiset_permutations(items: list) -> list[list]:
    """Every distinct ordering of ``items`` (each once)."""
    counts = Counter(items)
    keys = sorted(counts)
    out: list[list] = []
    current: list = []

    def grow() -> None:
        if len(current) == len(items):
            out.append(list(current))
            return
        for key in keys:
            if counts[key]:
                counts[key] -= 1
                current.append(key)
                grow()
                current.pop()
                counts[key] += 1

    grow()
    return out


def sequence_test(y: np.ndarray, sequences: np.ndarray, n_perm: int = 999,
                  random_state: int | np.random.Generator | None = 0) -> dict:
    """One-way F of subject means across sequences with its parametric and permutation p.

    Parameters
    ----------
    y : ndarray (n_subjects,) or (n_subjects, n_sets)
        Subject means (several sets share the rearrangements).
    sequences : ndarray (n_subjects,)
        Each subject's sequence.
    n_perm : int
        Random rearrangements (the observed one not counted).

    Returns
    -------
    dict with stat, df_num, df, p, p_perm (arrays when ``y`` is 2-D), n_perm (rearrangements
    used, the observed one included), exhaustive.
    """
    rng = np.random.default_rng(random_state)
    sequences = np.asarray(sequences).astype(str)
    n, g = len(sequences), len(np.unique(sequences))
    if g < 2 or n <= g:
        raise ValueError(f"{n} subjects in {g} sequence(s): no between-sequence test")
    perms, exhaustive = label_rearrangements(sequences, n_perm, rng)
    f = one_way_f(y, perms)
    observed = f[0]
    # ties in rounding: a rearranged F equal to the observed one counts as at least as large
    tol = 1e-10 * np.maximum(np.abs(observed), 1.0)
    p_perm = (f >= observed - tol).sum(axis=0) / len(perms)
    p = special.fdtrc(g - 1, n - g, observed)
    return {"stat": observed, "df_num": float(g - 1), "df": float(n - g), "p": p,
            "p_perm": p_perm, "n_perm": len(perms), "exhaustive": exhaustive}


def sequence_statistics(effects: pd.DataFrame, *, n_perm: int = 999,
                        random_state: int | None = 0, value: str = "effect") -> pd.DataFrame:
    """The sequence test per node, pathway and the lateral-medial index.

    Parameters
    ----------
    effects : DataFrame
        The long ROI-effects table with ``sequence``.

    Returns
    -------
    DataFrame with columns ``SEQUENCE_COLUMNS`` (contrast ``sequenceF``); ``p_perm_fdr`` is
    Benjamini-Hochberg over the units of a level. Units without a testable sequence
    layout get a row with the reason in ``note``.
    """
    rows = []
    for ids, data in analysis_units(effects, value):
        data = data.dropna(subset=["effect"])
        means = data.groupby("subject", sort=True).agg(effect=("effect", "mean"),
                                                       sequence=("sequence", "first"),
                                                       n=("effect", "size"))
        row = {**ids, "contrast": "sequenceF", "n_subjects": len(means), "note": ""}
        known = means.dropna(subset=["sequence"])
        if len(known) < len(means):
            row["note"] = f"{len(means) - len(known)} subject(s) without a sequence left out; "
        row["n_sequences"] = known["sequence"].nunique()
        if known["n"].nunique() > 1:
            row["note"] += "subject means over unequal numbers of conditions (drop-outs); "
        try:
            res = sequence_test(known["effect"].to_numpy(), known["sequence"].to_numpy(),
                                n_perm, random_state)
        except ValueError as exc:
            row["note"] += str(exc)
        else:
            row.update({k: (float(v) if k not in ("n_perm", "exhaustive") else v)
                        for k, v in res.items()})
            row["n_subjects"] = len(known)
        row["note"] = row["note"].rstrip("; ")
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame(columns=list(SEQUENCE_COLUMNS))
    table = add_fdr(table.reindex(columns=[c for c in SEQUENCE_COLUMNS if c != "p_perm_fdr"]),
                    ["level"], p="p_perm", out="p_perm_fdr")
    return table.reindex(columns=list(SEQUENCE_COLUMNS))
