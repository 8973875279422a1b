"""The carry-over and sequence section of ``group.html`` and its methods sentence.

Receives what the stages wrote (the group maps and their thresholds, the shift summary,
the permutation results, the pathway tables ``desc-carryover_table.tsv`` and
``desc-sequenceStats_table.tsv``) and says, for the
maps and per node, whether carry-over (or a sequence effect) is detectable and how much
the condition estimates move when carry-over enters the model. Computes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from fmri_pain.report.render import html_table
from fmri_pain.report.tsv_html import collapsed

CARRYOVER_MAPS = ("carryoverF", "sequenceF")


def _map_rows(group: Any, permutations: list[Any], alpha: float) -> pd.DataFrame:
    perm = {p.contrast: p.result.summary(alpha) for p in permutations or []}
    rows = []
    for entry in group.maps:
        if entry.contrast not in CARRYOVER_MAPS and not entry.contrast.startswith("carryover"):
            continue
        fdr = entry.thresholds.get("fdr")
        clusters = entry.clusters.get("fdr", pd.DataFrame())
        n_clusters = (int(clusters["Cluster ID"].astype(str).str.isdigit().sum())
                      if not clusters.empty else 0)
        row = {"contrast": entry.contrast, "route": entry.route, "statistic": entry.stat_type,
               "df": " / ".join(map(str, entry.dof)) if isinstance(entry.dof, list) else entry.dof,
               "FDR z threshold": fdr, "FDR clusters": n_clusters,
               "detected (FDR)": "no voxel" if fdr is None or fdr == float("inf") else "yes"}
        if entry.contrast in perm:
            s = perm[entry.contrast]
            row.update({"permutation scheme": s["scheme"], "voxels FWE (perm)": s["n_voxels_fwe"],
                        "smallest attainable p": s["min_p"]})
        rows.append(row)
    return pd.DataFrame(rows)


def _node_summary(path: Path, alpha: float) -> pd.DataFrame:
    table = pd.read_csv(path, sep="\t", na_values="n/a")
    if table.empty:
        return table
    ids = ["level", "node", "pathway"]
    first = table.groupby(ids, sort=False).first().reset_index()
    out = first[ids + ["carryover_F", "carryover_df_num", "carryover_df", "carryover_p",
                       "carryover_p_fdr", "note"]].copy()
    out["detected"] = [("n/a" if pd.isna(q) else ("yes" if q < alpha else "no"))
                       for q in out["carryover_p_fdr"]]
    shifts = table.pivot_table(index=ids, columns="contrast", values="shift", sort=False)
    shifts.columns = [f"shift {c}" for c in shifts.columns]
    return out.merge(shifts.reset_index(), on=ids, how="left")


def carryover_report_section(group: Any, permutations: list[Any] | None,
                             pathways: dict[str, Path] | None, alpha: float) -> str | None:
    """HTML of the carry-over section (None when carry-over was not modelled).

    Parameters
    ----------
    group : GroupResult
        The group level's maps and ``carryover_shift``.
    permutations : list of PermutationOutput or None
    pathways : dict of output name -> path, or None
    alpha : float
        Level of "detected" (the FDR q of the maps' thresholds is the spec's).
    """
    shift = getattr(group, "carryover_shift", None)
    maps = _map_rows(group, permutations or [], alpha)
    node_path = (pathways or {}).get("carryover")
    seq_path = (pathways or {}).get("sequence_stats")
    if shift is None and maps.empty and node_path is None:
        return None
    parts = ["<p>First-order carry-over (the condition of the previous period, sum-to-zero over "
             "the previous conditions; only differences are estimable with period in the model) "
             "was a term of the repeated-measures model and of the pathway models: "
             "<code>carryoverF</code> tests every carry-over difference, "
             "<code>carryover&lt;Cond&gt;</code> the carry-over of a condition minus the mean of "
             "the others, and the condition contrasts are adjusted for it. The sequence test "
             "compares each subject's mean over its conditions across treatment sequences "
             "(<code>sequenceF</code>), with whole subjects permuted across sequences.</p>"]
    parts.append("<h3>Maps</h3>")
    parts.append(str(html_table(maps)) if not maps.empty else
                 "<p>No carry-over map was written (see the warnings: the data could not "
                 "estimate it).</p>")
    if shift is not None and not shift.empty:
        parts.append("<p>How much each condition contrast's effect map moves when carry-over "
                     "enters the model (|with - without| over the group mask):</p>")
        parts.append(str(html_table(shift)))
    if node_path is not None:
        parts.append("<h3>Nodes and pathways</h3><p>carryoverF per unit (p_fdr: "
                     "Benjamini-Hochberg over the units of a level; detected: p_fdr &lt; "
                     f"{alpha:g}) and the shift of each condition estimate (with - without "
                     "carry-over).</p>")
        parts.append(collapsed(_node_summary(Path(node_path), alpha), html_table, alpha))
    if seq_path is not None:
        seq = pd.read_csv(seq_path, sep="\t", na_values="n/a")
        parts.append("<h3>Sequence test per node</h3>")
        parts.append(collapsed(seq[[c for c in ("level", "node", "stat", "df_num", "df", "p",
                                                "p_perm", "p_perm_fdr", "n_perm", "note")
                                    if c in seq]], html_table, alpha))
    return "\n".join(parts)


def carryover_methods(group: Any) -> str | None:
    """The methods sentence on carry-over and sequence maps, when they were fitted."""
    names = [m.contrast for m in group.maps]
    notes = [w for w in getattr(group, "warnings", []) if "carry-over not modelled" in w]
    if not any(n.startswith("carryover") or n == "sequenceF" for n in names) and not notes:
        return None
    text = []
    if "carryoverF" in names:
        levels = [n.removeprefix("carryover") for n in names
                  if n.startswith("carryover") and n != "carryoverF"]
        text.append("First-order carry-over (the condition of the previous period, sum-to-zero "
                    "coded; none in period 1) was a term of the repeated-measures model, tested by "
                    "an F test of all carry-over differences (carryoverF) and per condition by t "
                    f"contrasts of its carry-over against the mean of the others "
                    f"({', '.join('carryover' + lv for lv in levels)}); the condition contrasts "
                    "are adjusted for it.")
    elif notes:
        text.append("Carry-over was asked for but not modelled: " + "; ".join(notes) + ".")
    if "sequenceF" in names:
        text.append("A between-subject sequence test compared each subject's mean condition map "
                    "across treatment sequences (one indicator per sequence, F test sequenceF).")
    return " ".join(text)
