"""``group.html``: methods, designs, group maps, cluster tables, inference, pathways."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fmri_pain.report.figures import design_matrix_uri, glass_brain_uri
from fmri_pain.report.methods import (MethodsSection, boilerplate, cited_keys, group_section,
                                      reference_list, render_citations, software_section)
from fmri_pain.report.render import html_table, markup, render_report
from fmri_pain.config.spec import AnalysisSpec
from fmri_pain.trial import trial_contrasts

_ROUTE_NOTE = {
    "one-sample": "one-sample t test over subjects",
    "repeated": "repeated-measures model of all subject x condition maps",
    "paired": "paired route (within-subject difference maps)",
}


def write_group_report(group, spec: AnalysisSpec, output_dir: Path,
                       inference_section: str | None = None,
                       pathways_section: str | None = None,
                       methods: list[MethodsSection] | None = None) -> Path:
    """Write ``OUTPUT_DIR/group.html`` from a :class:`~fmri_pain.glm.second_level.group.GroupResult`.

    ``methods``: the boilerplate of the stages that ran (default: the group
    paragraph and software only); the group level's warnings are listed first.
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

    summary, contrasts = [], []
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
            row[f"{method} clusters"] = int(clusters["Cluster ID"].astype(str).str.isdigit().sum()) \
                if not clusters.empty else 0
            caption = (f"z > {thr:.2f}" if thr != float("inf") else "no voxel survives")
            tables.append((method.upper(), {"caption": caption, "html": html_table(clusters.head(15))}))
        summary.append(row)
        best = min(entry.thresholds.values(), default=None)
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
        inference_section=markup(inference_section), pathways_section=markup(pathways_section),
        dataset_notes=_dataset_notes(output_dir))


def _dataset_notes(output_dir: Path):
    """The dataset scan's notes (drop-outs, ignored files) as a table, or None."""
    path = output_dir / "logs" / "dataset_notes.tsv"
    try:
        notes = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (OSError, ValueError):
        return None
    return html_table(notes) if not notes.empty else None
