"""The group level end to end: GLMs, permutation inference, pathways, report."""

from __future__ import annotations

import html
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from fmri_pain.errors import InputError
from fmri_pain.glm.second_level.group import GroupResult, run_group
from fmri_pain.glm.inference.group_contrasts import (
    PermutationOutput,
    inference_summary,
    inference_warnings,
    run_permutation_inference,
)
from fmri_pain.bids.runs import Run
from fmri_pain.report.figures import glass_brain_uri
from fmri_pain.report.group import write_group_report
from fmri_pain.report.methods import (MethodsSection, boilerplate, first_level_section,
                                      group_section, inference_section, pathways_section,
                                      preprocessing_section, software_section,
                                      write_citation_files)
from fmri_pain.report.render import html_table
from fmri_pain.config.spec import AnalysisSpec

LOGGER = logging.getLogger(__name__)


@dataclass
class GroupLevelResult:
    """What the group level wrote."""

    group: GroupResult
    permutations: list[PermutationOutput]
    pathways: dict[str, Path] | None
    report: Path
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def left_out(self) -> list[str]:
        """Subjects of the dataset without participant-level outputs."""
        return self.group.left_out


def run_group_level(output_dir: Path | str, runs: list[Run], spec: AnalysisSpec) -> GroupLevelResult:
    """Fit the group models, run permutation inference and the pathway analysis, write group.html.

    Parameters
    ----------
    output_dir : path
        Derivatives folder with the participant level's outputs.
    runs : list of Run
        The dataset's runs (conditions, periods, covariates; preprocessed
        BOLD for connectivity).
    spec : AnalysisSpec

    Raises
    ------
    InputError
        When ``output_dir`` holds no participant-level maps (group before
        participant) or there are no runs.
    """
    output_dir = Path(output_dir)
    if next(output_dir.glob("sub-*/**/*_statmap.nii.gz"), None) is None:
        raise InputError("no participant-level maps in OUTPUT_DIR: run "
                         "`fmri-pain BIDS_DIR OUTPUT_DIR participant` first", path=output_dir)
    if not runs:
        raise InputError("no valid runs in the dataset for the group level", path=output_dir)
    timings = {}
    start = time.perf_counter()
    group = run_group(output_dir, runs, spec)
    timings["glm"] = time.perf_counter() - start

    permutations: list[PermutationOutput] = []
    inference_html = None
    if spec.inference.enabled:  # n_perm >= 1 is checked when the spec is loaded
        start = time.perf_counter()
        permutations = run_permutation_inference(group, spec)
        inference_html = _inference_section(permutations, spec)
        timings["permutation"] = time.perf_counter() - start

    pathways = None
    pathways_html = None
    if spec.pathways.enabled:
        from fmri_pain.pathways import pathway_report_section, run_pathway_analysis

        start = time.perf_counter()
        maps = group.subject_maps.dropna(subset=["condition"])
        pathway_runs = [r for r in runs if r.subject in group.subjects and r.confounds is not None]
        pathways = run_pathway_analysis(maps, pathway_runs or None, output_dir, spec.pathways,
                                        conditions=spec.conditions,
                                        on_trial_type=spec.events.on_trial_type)
        pathways_html = pathway_report_section(pathways)
        timings["pathways"] = time.perf_counter() - start

    methods = methods_boilerplate(output_dir, runs, spec, group, permutations, pathways)
    write_citation_files(output_dir, methods)
    report = write_group_report(group, spec, output_dir, inference_html, pathways_html,
                                methods=methods)
    LOGGER.info("group level timings: %s", {k: round(v, 1) for k, v in timings.items()})
    return GroupLevelResult(group, permutations, pathways, report, timings)


def methods_boilerplate(output_dir: Path, runs: list[Run], spec: AnalysisSpec, group: GroupResult,
                        permutations: list[PermutationOutput],
                        pathways: dict[str, Path] | None) -> list[MethodsSection]:
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
    """
    designs = [json.loads(p.read_text()) for p in sorted(Path(output_dir).glob("sub-*/**/*_design.json"))
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
        software_section(),
    ])


def _inference_section(outputs: list[PermutationOutput], spec: AnalysisSpec) -> str:
    alpha = spec.group.fwe_alpha
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
            parts.append(str(html_table(out.clusters.head(10))))
    return "\n".join(parts)
