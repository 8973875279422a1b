"""The margin-tests section of ``group.html``: non-inferiority, superiority and TOST, as written.

The node and pathway table and its figures come from
``group/pathways/desc-equivalence_table.tsv`` (and its sidecar's description of the model that
ran); the voxelwise maps from their sidecars (``NumberOfVoxelsDeclared``, rearrangements).
Nothing is computed here.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from fmri_pain.report.figures import file_to_uri, glass_brain_uri
from fmri_pain.report.methods import MethodsSection
from fmri_pain.report.render import html_table

TABLE_COLUMNS = ["level", "node", "contrast", "kind", "unit", "margin", "estimate_unit", "ci_low",
                 "ci_high", "df", "method", "p", "p_fdr", "conclusion", "note"]


def _sidecar(path: Path) -> dict:
    path = Path(path)
    stem = path.name.removesuffix(".nii.gz").removesuffix(".tsv")
    try:
        return json.loads(path.with_name(stem + ".json").read_text())
    except (OSError, ValueError):
        return {}


def _maps_rows(maps: Sequence[Any]) -> tuple[pd.DataFrame, list[str]]:
    rows, images = [], []
    for out in maps:
        test = out.test
        row = {"contrast": test.contrast, "kind": test.kind, "margin": test.margin,
               "unit": test.unit, "route": out.route or "n/a"}
        if not out.paths:
            rows.append({**row, "note": out.note})
            continue
        meta = _sidecar(out.paths["logp_fwe"])
        rows.append({**row, "permutations": meta.get("NumberOfPermutations"),
                     "exhaustive": "yes" if meta.get("Exhaustive") else "no (random)",
                     "smallest attainable p": meta.get("MinimumAttainableP"),
                     f"voxels FWE p < {meta.get('Alpha', 0.05):g}": meta.get("NumberOfVoxelsDeclared"),
                     "note": out.note})
        title = f"{test.contrast}: {test.kind} (-log10 FWE p)"
        uri = glass_brain_uri(out.paths["logp_fwe"], title, -math.log10(float(meta.get("Alpha", 0.05))),
                              two_sided=False)
        images.append(f"<img src='{uri}' alt='{html.escape(title)}'>")
    return pd.DataFrame(rows), images


def equivalence_report_section(pathways: dict[str, Path] | None,
                               maps: Sequence[Any] | None = None) -> str | None:
    """HTML of the margin tests (None when none ran).

    Parameters
    ----------
    pathways : dict or None
        The pathway stage's outputs (``equivalence`` table, ``equivalence_*`` figures).
    maps : sequence of EquivalenceMapOutput, optional
        The voxelwise tests (``fmri_pain.glm.inference.equivalence.run_equivalence_maps``).
    """
    pathways = pathways or {}
    if "equivalence" not in pathways and not maps:
        return None
    parts = ['<div class="equivalence">']
    if "equivalence" in pathways:
        meta = _sidecar(pathways["equivalence"])
        parts.append(f"<p>{html.escape(str(meta.get('Description', '')))}. Decisions (conclusion) "
                     "at the one-sided level, unadjusted over nodes (p_fdr: Benjamini-Hochberg over "
                     "the units of a level).</p>")
        table = pd.read_csv(pathways["equivalence"], sep="\t", na_values="n/a", keep_default_na=False)
        parts.append(str(html_table(table[[c for c in TABLE_COLUMNS if c in table.columns]])))
        for key in sorted(k for k in pathways if k.startswith("equivalence_")):
            parts.append(f"<figure><img alt='{html.escape(key)}' src='{file_to_uri(pathways[key])}'/>"
                         f"<figcaption>{html.escape(key.removeprefix('equivalence_'))}: estimate and "
                         "1 - 2 alpha CI against the margin (dashed)</figcaption></figure>")
    if maps:
        rows, images = _maps_rows(maps)
        parts.append("<h3>Voxelwise (permutation, max-t FWE)</h3><p>One-sided sign-flip tests of the "
                     "group maps shifted by the margin; TOST p = the larger of its two tests' "
                     "p.</p>")
        parts.append(str(html_table(rows)))
        parts += images
    parts.append("</div>")
    return "\n".join(parts)


def equivalence_methods(pathways: dict[str, Path] | None,
                        maps: Sequence[Any] | None = None) -> MethodsSection | None:
    """The methods paragraph of the margin tests that ran, from the table and the map sidecars."""
    pathways = pathways or {}
    written = [out for out in (maps or []) if out.paths]
    if "equivalence" not in pathways and not written:
        return None
    sentences = []
    if "equivalence" in pathways:
        meta = _sidecar(pathways["equivalence"])
        params = meta.get("Parameters", {})
        alpha = float(params.get("alpha", 0.05))
        tests = "; ".join(f"{t['kind']} of {t['contrast']} (margin {t['margin']:g} {t['unit']})"
                          for t in params.get("tests", []))
        table = pd.read_csv(pathways["equivalence"], sep="\t", na_values="n/a", keep_default_na=False)
        methods = sorted(set(table["method"].dropna().astype(str)) - {""})
        how = {"t": "t tests of the estimate against the margin with Satterthwaite df",
               "noncentral-t": "for d_z margins on complete data, the exact noncentral t",
               "t-plugin-sd": "for d_z margins with missing data, the margin times the estimated "
                              "within-subject SD of the contrast"}
        sentences.append(
            f"Margin tests per pain-pathway node, pathway mean and lateral-medial index ({tests}) used "
            "the crossover mixed model of the ROI statistics: " + "; ".join(how[m] for m in methods if m in how)
            + f", one-sided at alpha = {alpha:g}, equivalence as two one-sided tests [@schuirmann1987], "
            f"with {100 * (1 - 2 * alpha):g}% confidence intervals drawn against the margin as in "
            "CONSORT's extension for non-inferiority and equivalence trials [@piaggio2012].")
    if written:
        counts = sorted({int(_sidecar(out.paths["logp_fwe"]).get("NumberOfPermutations") or 0)
                         for out in written})
        listed = ", ".join(f"{out.test.kind} of {out.test.contrast}" for out in written)
        sentences.append(
            f"Voxelwise ({listed}), each one-sided test was a sign-flip permutation test "
            f"({counts[0] if len(counts) == 1 else f'{counts[0]} to {counts[-1]}'} rearrangements, the observed "
            "data included) of the group maps shifted by the margin, with max-t family-wise error "
            "control [@nichols2002]; the TOST p value of a voxel is the larger of its two tests'.")
    return MethodsSection("margin tests", " ".join(sentences))
