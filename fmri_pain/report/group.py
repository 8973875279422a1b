"""``group.html`` and the methods of the group level: designs, group maps, cluster tables,
permutation inference, pathways, from what each stage wrote (nothing is computed here)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import pandas as pd

from fmri_pain.bids.runs import Run
from fmri_pain.config.spec import AnalysisSpec
from fmri_pain.glm.inference.group_contrasts import (PermutationOutput, inference_summary,
                                                     inference_warnings)
from fmri_pain.glm.second_level.outputs import GroupResult
from fmri_pain.report.carryover import carryover_report_section
from fmri_pain.report.figures import design_matrix_uri, glass_brain_uri, viewer_document
from fmri_pain.report.group_qc import group_qc_table
from fmri_pain.report.methods import (MethodsSection, boilerplate, cited_keys, first_level_section,
                                      group_section, inference_section, pathways_section,
                                      preprocessing_section, reference_list, render_citations,
                                      software_section)
from fmri_pain.report.equivalence import equivalence_methods, equivalence_report_section
from fmri_pain.report.pathways import pathway_report_section
from fmri_pain.report.render import html_table, markup, render_report
from fmri_pain.report.viewer import viewer_section
from fmri_pain.trial import difference_contrasts, trial_contrasts

MAX_VIEWER_MAPS = 3
"""Maps in the interactive viewer (each adds ~0.2 MB: scripts and sprites), the condition
differences first."""

_ROUTE_NOTE = {
    "one-sample": "one-sample t test over subjects",
    "repeated": "repeated-measures model of all subject x condition maps",
    "paired": "paired route (within-subject difference maps)",
    "sequence": "between-subject sequence test (subject-mean maps)",
    "two-group": "between-subject two-group test (group A minus group B)",
    "covariate": "between-subject covariate test (its slope)",
}


def write_group_report(group: GroupResult, spec: AnalysisSpec, output_dir: Path,
                       permutations: list[PermutationOutput] | None = None,
                       pathways: dict[str, Path] | None = None,
                       methods: list[MethodsSection] | None = None,
                       equivalence_maps: list | None = None) -> Path:
    """Write ``OUTPUT_DIR/group.html`` from what the group level's stages wrote.

    Parameters
    ----------
    group : GroupResult
        The parametric group level's maps, designs, thresholds and warnings
        (listed first).
    spec : AnalysisSpec
        The run's spec (contrast descriptions, alpha of the permutation maps).
    output_dir : path
    permutations : list of PermutationOutput, optional
        The permutation stage's outputs; None: it did not run (no section).
    pathways : dict, optional
        The pathway stage's outputs; None: it did not run (no section).
    methods : list of MethodsSection, optional
        The boilerplate of the stages that ran (default: the group paragraph and
        software only).
    equivalence_maps : list of EquivalenceMapOutput, optional
        The voxelwise margin tests; with the pathways' ``equivalence`` table, the
        margin-tests section (none when neither ran).
    """
    output_dir = Path(output_dir)
    methods = methods or boilerplate([group_section(group, spec), software_section()])
    keys = cited_keys(methods)
    descriptions = {k: c.description for k, c in trial_contrasts(spec.conditions).items()}
    designs, seen = [], set()
    for entry in group.maps:
        key = (entry.design.route, tuple(entry.design.design.columns), len(entry.design.design))
        if key in seen:
            continue
        seen.add(key)
        designs.append({"name": f"{_ROUTE_NOTE[entry.design.route]}: {entry.design.terms} "
                                f"({entry.contrast})",
                        "uri": design_matrix_uri(entry.design.design)})

    summary, contrasts, viewable = [], [], []
    for entry in group.maps:
        base = {"contrast": entry.contrast, "route": entry.route, "terms": entry.design.terms,
                "subjects": len(entry.subjects), "maps": entry.n_maps,
                "df": " / ".join(map(str, entry.dof)) if isinstance(entry.dof, list) else entry.dof,
                "warnings": len(entry.warnings),
                "file": str(entry.paths["z"].relative_to(output_dir))}
        if entry.route == "paired":
            summary.append(base)
            continue
        row = dict(base)
        tables = []
        for method, thr in entry.thresholds.items():
            clusters = entry.clusters.get(method, pd.DataFrame())
            row[f"{method} z threshold"] = thr
            n_clusters = int(clusters["Cluster ID"].astype(str).str.isdigit().sum()) \
                if not clusters.empty else 0
            row[f"{method} clusters"] = n_clusters
            caption = (f"z > {thr:.2f}, {n_clusters} cluster(s)"
                       + (f" (table: the first 15 of {len(clusters)} rows)" if len(clusters) > 15 else "")
                       if thr != float("inf") else "no voxel survives")
            tables.append((method.upper(), {"caption": caption, "html": html_table(clusters.head(15))}))
        summary.append(row)
        best = min(entry.thresholds.values(), default=None)
        viewable.append((entry, best))
        contrasts.append({
            "name": entry.contrast, "route": f"{_ROUTE_NOTE[entry.route]}: {entry.design.terms}",
            "description": descriptions.get(entry.contrast, ""),
            "map": glass_brain_uri(entry.paths["z"], f"{entry.contrast} (z)", best,
                                   two_sided=entry.stat_type == "t"),
            "tables": tables})
    return render_report(
        "group.html", output_dir / "group.html", "group",
        [(f"sub-{s}", f"sub-{s}.html") for s in group.subjects],
        n_subjects=len(group.subjects), subjects=group.subjects,
        left_out=", ".join(f"sub-{s}" for s in group.left_out),
        warnings=group.warnings,
        methods=[{"stage": m.stage.capitalize(), "text": render_citations(m.text)} for m in methods],
        references=reference_list(keys), designs=designs,
        summary_table=html_table(pd.DataFrame(summary)), contrasts=contrasts,
        viewers=markup(_viewers(viewable, spec)),
        qc_table=markup(_qc_html(group, output_dir)),
        inference_section=markup(None if permutations is None
                                 else _inference_html(permutations, spec.group.fwe_alpha)),
        pathways_section=markup(None if pathways is None else pathway_report_section(pathways)),
        equivalence_section=markup(equivalence_report_section(pathways, equivalence_maps)),
        carryover_section=markup(carryover_report_section(group, permutations, pathways,
                                                          spec.group.fdr_q)),
        dataset_notes=_dataset_notes(output_dir))


def _viewers(viewable: list, spec: AnalysisSpec) -> str:
    """The interactive viewer of the main maps: the condition differences, then the rest, at most
    :data:`MAX_VIEWER_MAPS`, each at the lowest threshold of its figure."""
    main = set(difference_contrasts(trial_contrasts(spec.conditions)))
    ordered = sorted(viewable, key=lambda item: item[0].contrast not in main)[:MAX_VIEWER_MAPS]
    documents, width, height = [], 0, 0
    for entry, best in ordered:
        threshold = best if best is not None and best != float("inf") else 3.1
        label = f"{entry.contrast} ({entry.route}, z > {threshold:.2f})"
        doc, w, h = viewer_document(entry.paths["z"], f"{entry.contrast} (z)", threshold,
                                    two_sided=entry.stat_type == "t")
        documents.append((label, doc))
        width, height = max(width, w), max(height, h)
    return viewer_section(documents, width, height)


def _qc_html(group: GroupResult, output_dir: Path) -> str | None:
    """The per subject and session QC table (None when no design sidecar was found)."""
    table = group_qc_table(output_dir, group.subjects, group.subject_maps, group.mask)
    return None if table.empty else str(html_table(table))


def _dataset_notes(output_dir: Path):
    """The dataset scan's notes (drop-outs, ignored files) as a table, or None."""
    path = output_dir / "logs" / "dataset_notes.tsv"
    try:
        notes = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (OSError, ValueError):
        return None
    return html_table(notes) if not notes.empty else None


def _inference_html(outputs: list[PermutationOutput], alpha: float) -> str:
    """The permutation section: summary table, warnings, FWE glass brains and cluster tables."""
    parts = [str(html_table(inference_summary(outputs, alpha)))]
    notes = inference_warnings(outputs)
    if notes:
        parts.append("<ul class='warnings'>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes)
                     + "</ul>")
    for out in outputs:
        z_fwe = out.paths.get("z_tfce_fwe") or out.paths.get("z_fwe")
        if z_fwe is None:
            continue
        label = "TFCE" if "z_tfce_fwe" in out.paths else "max-t"
        parts.append(f"<h3>{out.contrast} <span class='small'>({out.route}, {label} FWE p &lt; "
                     f"{alpha:g})</span></h3>")
        parts.append(f"<img src='{glass_brain_uri(z_fwe, f'{out.contrast}: {label} FWE', 1e-3, out.result.two_sided)}' "
                     f"alt='{out.contrast} permutation map'>")
        if not out.clusters.empty:
            parts.append(f"<details class='more'><summary>Clusters ({len(out.clusters)} rows; the "
                         f"first 10)</summary>{html_table(out.clusters.head(10))}</details>")
    return "\n".join(parts)


def methods_boilerplate(output_dir: Path, runs: list[Run], spec: AnalysisSpec, group: GroupResult,
                        permutations: list[PermutationOutput],
                        pathways: dict[str, Path] | None,
                        equivalence_maps: list | None = None) -> list[MethodsSection]:
    """The methods paragraphs of every stage that ran, from what each recorded.

    Parameters
    ----------
    output_dir : path
    runs : list of Run
        The dataset's runs (their BOLD files name the preprocessing input).
    spec : AnalysisSpec
    group : GroupResult
    permutations : list of PermutationOutput
        Empty when permutation inference did not run.
    pathways : dict or None
        The pathway stage's outputs; None when it did not run.
    equivalence_maps : list of EquivalenceMapOutput, optional
        The voxelwise margin tests that ran.
    """
    designs: list[dict[str, Any]] = [
        json.loads(p.read_text()) for p in sorted(Path(output_dir).glob("sub-*/**/*_design.json"))
        if p.name.split("_")[0][4:] in group.subjects]
    condition_labels = {c.lower() for c in spec.conditions}
    trial_mode = bool(condition_labels & set(group.subject_maps["contrast"]))
    return boilerplate([
        preprocessing_section(output_dir, group.subjects,
                              [r.bold for r in runs if r.subject in group.subjects]),
        first_level_section(group.first_level, spec, designs, trial_mode=trial_mode),
        group_section(group, spec),
        inference_section(permutations, spec),
        pathways_section(pathways),
        equivalence_methods(pathways, equivalence_maps),
        software_section(),
    ])
