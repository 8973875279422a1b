"""``group.html``: methods, designs, group maps, cluster tables, inference, pathways."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fmri_pain.derivatives import space_of
from fmri_pain.report.figures import design_matrix_uri, glass_brain_uri
from fmri_pain.report.methods import first_level_methods, group_methods, software_sentence
from fmri_pain.report.render import html_table, markup, render_report
from fmri_pain.spec import AnalysisSpec
from fmri_pain.trial import trial_contrasts

_ROUTE_NOTE = {
    "one-sample": "one-sample t test over subjects",
    "repeated": "repeated-measures crossover model (condition + subject + period)",
    "paired": "paired route (within-subject difference maps, period-adjusted)",
}


def write_group_report(group, spec: AnalysisSpec, output_dir: Path,
                       inference_section: str | None = None,
                       pathways_section: str | None = None,
                       preprocessed_here: bool = False) -> Path:
    """Write ``OUTPUT_DIR/group.html`` from a :class:`~fmri_pain.glm.group.GroupResult`."""
    output_dir = Path(output_dir)
    descriptions = {k: c.description for k, c in trial_contrasts(spec.conditions).items()}
    designs, seen = [], set()
    for entry in group.maps:
        key = (entry.design.route, tuple(entry.design.design.columns), len(entry.design.design))
        if key in seen:
            continue
        seen.add(key)
        designs.append({"name": f"{_ROUTE_NOTE[entry.design.route]} ({entry.contrast})",
                        "uri": design_matrix_uri(entry.design.design)})

    summary, contrasts = [], []
    for entry in group.maps:
        if entry.route == "paired":
            summary.append({"contrast": entry.contrast, "route": entry.route, "maps": entry.n_maps,
                            "file": str(entry.paths["z"].relative_to(output_dir))})
            continue
        row = {"contrast": entry.contrast, "route": entry.route, "maps": entry.n_maps,
               "file": str(entry.paths["z"].relative_to(output_dir))}
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
            "name": entry.contrast, "route": _ROUTE_NOTE[entry.route],
            "description": descriptions.get(entry.contrast, ""),
            "map": glass_brain_uri(entry.paths["z"], f"{entry.contrast} (z)", best,
                                   two_sided=entry.stat_type == "t"),
            "tables": tables})
    return render_report(
        "group.html", output_dir / "group.html", "group",
        [(f"sub-{s}", f"sub-{s}.html") for s in group.subjects],
        n_subjects=len(group.subjects), subjects=group.subjects,
        left_out=", ".join(f"sub-{s}" for s in group.left_out),
        first_level_methods=first_level_methods(spec, preprocessed_here, space_of(group.mask)),
        group_methods=group_methods(spec), software=software_sentence(), designs=designs,
        summary_table=html_table(pd.DataFrame(summary)), contrasts=contrasts,
        inference_section=markup(inference_section), pathways_section=markup(pathways_section))
