"""Responders: status from pain outcomes, and node effects of responders vs non-responders.

A subject is a responder under condition ``c`` when its session of ``c`` passes
the spec's rules (thresholds on sessions.tsv columns, combined with ``all`` or
``any``; :class:`fmri_pain.config.responders.RespondersSpec`). A session with a
missing value in a rule's column has no status (``n/a``) and is left out of the
tests, and a rule naming a column the sessions lack is an error
(:class:`MissingColumnError`) the caller records as the reason the analysis was
not run.

Per condition and per node (and pathway mean), the node effects of responders
and non-responders are compared by the difference of means with Welch's t
(unequal variances; Welch-Satterthwaite df) and by a permutation test of
``|t|``: responder labels are rearranged among the subjects of the condition
(the group sizes stay fixed). When there are no more than ``n_permutations + 1``
distinct relabellings, all of them are used once each (exact test, ``p =
count / total``, the observed labelling included); otherwise ``n_permutations``
random ones give ``p = (1 + count) / (1 + n_permutations)``. Either way ``p`` is
never below ``1 / number of distinct relabellings``. ``p_fdr`` is
Benjamini-Hochberg over the nodes of a condition (and separately over its pathway
means) on the permutation p values.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from fmri_pain.config.responders import ResponderRule
from fmri_pain.pathways.stats import add_fdr, pathway_means

STATUS_COLUMNS = ("subject", "condition", "responder")
"""First columns of ``responders.tsv`` (then the rule columns)."""

RESPONDER_STAT_COLUMNS = ("condition", "level", "node", "pathway", "n_responders", "n_non_responders",
                          "mean_responders", "mean_non_responders", "difference", "se", "t", "df",
                          "p_welch", "p_perm", "n_rearrangements", "exhaustive", "p_fdr")


class MissingColumnError(ValueError):
    """A responder rule names a column the sessions table does not have."""


def responder_status(sessions: pd.DataFrame, rules: Sequence[ResponderRule], *, combine: str = "all",
                     conditions: Sequence[str] = ()) -> pd.DataFrame:
    """Responder status of every subject x condition.

    Parameters
    ----------
    sessions : DataFrame
        One row per subject x session: ``subject``, ``condition`` and the rule columns
        (sessions.tsv values).
    rules : sequence of ResponderRule
        Thresholds (``at_least`` / ``at_most``) on columns of ``sessions``.
    combine : {"all", "any"}
        A session responds when all rules pass, or any.
    conditions : sequence of str
        Conditions kept (matched case-insensitively); empty keeps every condition.

    Returns
    -------
    DataFrame
        ``subject``, ``condition``, ``responder`` (nullable boolean: ``<NA>`` when a rule's
        value is missing, or, with ``any``, when no rule passes and some value is missing),
        then the rule columns as read.

    Raises
    ------
    MissingColumnError
        A rule's column is not in ``sessions``.
    ValueError
        No rules, an unknown ``combine``, or a rule column that is not numeric.
    """
    if not rules:
        raise ValueError("no responder rules")
    if combine not in ("all", "any"):
        raise ValueError(f"combine must be 'all' or 'any', got {combine!r}")
    columns = list(dict.fromkeys(rule.column for rule in rules))
    missing = [c for c in columns if c not in sessions.columns]
    if missing:
        raise MissingColumnError(
            f"responder rule column(s) {', '.join(missing)} not in sessions.tsv (columns: "
            f"{', '.join(c for c in sessions.columns if c not in ('subject', 'condition'))}); a VAS "
            "reduction in mm needs its own column (baseline minus session VAS), which the sessions lack")
    table = sessions[["subject", "condition", *columns]].drop_duplicates(["subject", "condition"]).copy()
    table["subject"] = table["subject"].astype(str)
    if conditions:
        wanted = {c.lower() for c in conditions}
        table = table[table["condition"].astype(str).str.lower().isin(wanted)]
    passes, known = [], []
    for rule in rules:
        raw = table[rule.column]
        values = pd.to_numeric(raw, errors="coerce")
        bad = raw.notna() & values.isna()
        if bad.any():
            raise ValueError(f"responder rule column {rule.column} is not numeric: "
                             f"{raw[bad].iloc[0]!r} (sub-{table.loc[bad, 'subject'].iloc[0]})")
        ok = values.notna().to_numpy()
        passed = np.ones(len(values), dtype=bool)
        if rule.at_least is not None:
            passed &= values.to_numpy(dtype=float) >= rule.at_least
        if rule.at_most is not None:
            passed &= values.to_numpy(dtype=float) <= rule.at_most
        passes.append(passed & ok)
        known.append(ok)
    passes_m, known_m = np.array(passes), np.array(known)
    if combine == "all":
        value = passes_m.all(axis=0)
        defined = known_m.all(axis=0) | (known_m & ~passes_m).any(axis=0)  # one failing rule decides
    else:
        value = passes_m.any(axis=0)
        defined = known_m.all(axis=0) | value  # one passing rule decides
    status = pd.array(np.where(defined, value, False), dtype="boolean")
    status[~defined] = pd.NA
    table.insert(2, "responder", status)
    return table.reset_index(drop=True)


def read_responders(path) -> pd.DataFrame:
    """``responders.tsv`` as written by :func:`responder_status` (nullable boolean ``responder``)."""
    table = pd.read_csv(path, sep="\t", dtype={"subject": str, "responder": str}, na_values=["n/a"],
                        keep_default_na=False)
    table["responder"] = pd.array(table["responder"].map({"True": True, "False": False}), dtype="boolean")
    return table


def label_rearrangements(n: int, k: int, n_permutations: int,
                         rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """Relabellings of ``n`` subjects with ``k`` responders, the observed one first.

    The observed labelling is the first ``k`` subjects. All ``C(n, k)`` distinct
    labellings when there are no more than ``n_permutations + 1``; otherwise the
    observed one and ``n_permutations`` random ones.

    Returns
    -------
    labels : ndarray of bool, shape (n_rearrangements, n)
        ``True``: responder.
    exhaustive : bool
    """
    observed = np.arange(n) < k
    total = math.comb(n, k)
    if total <= n_permutations + 1:
        labels = np.zeros((total, n), dtype=bool)
        for i, members in enumerate(itertools.combinations(range(n), k)):
            labels[i, list(members)] = True
        first = int(np.flatnonzero((labels == observed).all(axis=1))[0])
        labels[[0, first]] = labels[[first, 0]]
        return labels, True
    draws = np.array([rng.permutation(observed) for _ in range(n_permutations)], dtype=bool)
    return np.vstack([observed[None], draws.reshape(-1, n)]), False


def welch_t(values: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Welch's t of responders (``labels`` True) minus non-responders, for each row of ``labels``.

    Returns
    -------
    t, difference, se : ndarray, shape (n_rearrangements,)
    """
    y = np.asarray(values, dtype=float)
    labels = np.atleast_2d(labels).astype(float)
    k1 = labels.sum(axis=1)
    k0 = labels.shape[1] - k1
    m1 = labels @ y / k1
    m0 = (1 - labels) @ y / k0
    v1 = (labels @ (y ** 2) - k1 * m1 ** 2) / (k1 - 1)
    v0 = ((1 - labels) @ (y ** 2) - k0 * m0 ** 2) / (k0 - 1)
    se = np.sqrt(np.maximum(v1, 0) / k1 + np.maximum(v0, 0) / k0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (m1 - m0) / se
    return t, m1 - m0, se


def responder_test(values: np.ndarray, responder: np.ndarray, *, n_permutations: int = 1000,
                   rng: np.random.Generator | int | None = None) -> dict:
    """Welch t and permutation p of responders vs non-responders on one unit.

    Parameters
    ----------
    values : ndarray, shape (n_subjects,)
    responder : ndarray of bool, shape (n_subjects,)
        Each group needs two or more subjects.
    n_permutations : int
        Random relabellings (0: no permutation p); all distinct ones when there are
        no more than ``n_permutations + 1``.

    Returns
    -------
    dict with n_responders, n_non_responders, mean_responders, mean_non_responders,
    difference, se, t, df (Welch-Satterthwaite), p_welch (two-sided), p_perm
    (two-sided, on ``|t|``), n_rearrangements (labellings in the null, the observed one
    included: ``p_perm = count / n_rearrangements``), exhaustive.
    """
    y = np.asarray(values, dtype=float)
    r = np.asarray(responder, dtype=bool)
    k1, k0 = int(r.sum()), int((~r).sum())
    if k1 < 2 or k0 < 2:
        raise ValueError(f"each group needs two or more subjects ({k1} responders, {k0} non-responders)")
    welch = sps.ttest_ind(y[r], y[~r], equal_var=False)
    t, diff, se = welch_t(y, r)
    row = {"n_responders": k1, "n_non_responders": k0, "mean_responders": float(y[r].mean()),
           "mean_non_responders": float(y[~r].mean()), "difference": float(diff[0]), "se": float(se[0]),
           "t": float(welch.statistic), "df": float(welch.df), "p_welch": float(welch.pvalue),
           "p_perm": np.nan, "n_rearrangements": 0, "exhaustive": False}
    if n_permutations > 0 and np.isfinite(row["t"]):
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        order = np.concatenate([np.flatnonzero(r), np.flatnonzero(~r)])  # responders first
        labels, exhaustive = label_rearrangements(len(y), k1, n_permutations, rng)
        null, _, _ = welch_t(y[order], labels)
        null = np.abs(np.nan_to_num(null, nan=0.0))
        observed = abs(row["t"])
        count = int((null >= observed - 1e-10 * max(observed, 1.0)).sum())  # the observed included
        row.update(p_perm=count / len(labels), n_rearrangements=len(labels), exhaustive=exhaustive)
    return row


def responder_statistics(effects: pd.DataFrame, status: pd.DataFrame, *, n_permutations: int = 1000,
                         random_state: int = 0) -> tuple[pd.DataFrame, list[str]]:
    """Node and pathway effects of responders vs non-responders, per condition.

    Parameters
    ----------
    effects : DataFrame
        The long ROI-effects table (subject, condition, node, pathway, effect ...).
    status : DataFrame
        :func:`responder_status` (subject, condition, responder).

    Returns
    -------
    table : DataFrame with columns ``RESPONDER_STAT_COLUMNS``
    notes : list of str
        Conditions not tested and why (fewer than two subjects in a group).
    """
    rng = np.random.default_rng(random_state)
    known = status.dropna(subset=["responder"])
    labels = {(str(s), str(c)): bool(v) for s, c, v in zip(known["subject"], known["condition"],
                                                          known["responder"])}
    rows, notes = [], []
    effects = effects.assign(subject=effects["subject"].astype(str))
    units = [("node", effects)]
    units.append(("pathway", pathway_means(effects)))
    for condition in dict.fromkeys(known["condition"].astype(str)):
        groups = [labels[k] for k in labels if k[1] == condition]
        n1, n0 = sum(groups), len(groups) - sum(groups)
        if n1 < 2 or n0 < 2:
            notes.append(f"{condition}: {n1} responder(s) and {n0} non-responder(s); the comparison "
                         "needs two or more in each group")
            continue
        for level, table in units:
            data = table[table["condition"].astype(str) == condition]
            key = "node" if level == "node" else "pathway"
            for unit, rows_u in data.groupby(key, sort=False):
                rows_u = rows_u.dropna(subset=["effect"])
                resp = [labels.get((s, condition)) for s in rows_u["subject"]]
                keep = np.array([v is not None for v in resp])
                r = np.array([bool(v) for v in resp], dtype=bool)[keep]
                y = rows_u["effect"].to_numpy(dtype=float)[keep]
                if r.sum() < 2 or (~r).sum() < 2:
                    continue
                test = responder_test(y, r, n_permutations=n_permutations, rng=rng)
                rows.append({"condition": condition, "level": level, "node": unit,
                             "pathway": rows_u["pathway"].iloc[0], **test})
    table = pd.DataFrame(rows, columns=[c for c in RESPONDER_STAT_COLUMNS if c != "p_fdr"])
    p = "p_perm" if n_permutations > 0 else "p_welch"
    return add_fdr(table, ["condition", "level"], p=p).reindex(columns=list(RESPONDER_STAT_COLUMNS)), notes
