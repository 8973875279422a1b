"""The group level end to end: GLMs, permutation inference, pathways, report.

Each stage gets its own section of the spec; the report receives what they wrote.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from fmri_pain.bids.derivatives import write_json
from fmri_pain.bids.runs import Run
from fmri_pain.config.bsm import validate_bsm
from fmri_pain.config.bsm_export import BSM_VERSION, CROSSOVER_NOTE, spec_to_bsm
from fmri_pain.config.spec import AnalysisSpec
from fmri_pain.errors import InputError
from fmri_pain.glm.inference.group_contrasts import PermutationOutput, run_permutation_inference
from fmri_pain.glm.inference.responder_maps import ResponderMapsOutput
from fmri_pain.glm.second_level.fit import run_group
from fmri_pain.glm.second_level.outputs import GroupResult
from fmri_pain.pipeline.responders import run_responder_maps_step
from fmri_pain.report.group import methods_boilerplate, write_group_report
from fmri_pain.report.methods import MethodsSection, write_citation_files

LOGGER = logging.getLogger(__name__)


@dataclass
class GroupLevelResult:
    """What the group level wrote."""

    group: GroupResult
    permutations: list[PermutationOutput]
    pathways: dict[str, Path] | None
    report: Path
    timings: dict[str, float] = field(default_factory=dict)
    equivalence_maps: list = field(default_factory=list)
    """Voxelwise margin tests (``glm.inference.equivalence.EquivalenceMapOutput``)."""
    responder_maps: ResponderMapsOutput | None = None
    model_files: dict[str, Path] = field(default_factory=dict)
    """The spec that ran (``spec``: ``spec.json``) and its BIDS Stats Model (``bsm``)."""

    @property
    def left_out(self) -> list[str]:
        """Subjects of the dataset without participant-level outputs."""
        return self.group.left_out


def write_model_files(output_dir: Path | str, spec: AnalysisSpec, name: str | None = None) -> dict[str, Path]:
    """Write ``spec.json`` and the spec as a BIDS Stats Model, ``model-<name>_smdl.json``, into ``output_dir``.

    The model is checked with bsmschema before it is written.

    Parameters
    ----------
    output_dir : path
    spec : AnalysisSpec
        The spec that ran.
    name : str, optional
        The model's ``Name`` (camel-cased into the file name's label); default ``fmriPain``.

    Returns
    -------
    dict
        ``spec`` and ``bsm``: the two paths written.
    """
    model = spec_to_bsm(spec, name or "fmriPain")
    validate_bsm(model, "the BIDS Stats Model written")
    output_dir = Path(output_dir)
    paths = {"spec": write_json(spec.to_dict(), output_dir / "spec.json"),
             "bsm": write_json(model, output_dir / f"model-{model['Name']}_smdl.json")}
    LOGGER.info("model written as a BIDS Stats Model (%s); %s", paths["bsm"].name, CROSSOVER_NOTE)
    return paths


def run_group_level(output_dir: Path | str, runs: list[Run], spec: AnalysisSpec,
                    model_name: str | None = None) -> GroupLevelResult:
    """Fit the group models, run permutation inference and the pathway analysis, write group.html.

    Parameters
    ----------
    output_dir : path
        Derivatives folder with the participant level's outputs.
    runs : list of Run
        The dataset's runs (conditions, periods, covariates; preprocessed
        BOLD for connectivity).
    spec : AnalysisSpec
    model_name : str, optional
        ``Name`` of the BIDS Stats Model the spec came from (the written model's name;
        default ``fmriPain``).

    Raises
    ------
    InputError
        When ``output_dir`` holds no participant-level maps (group before
        participant) or there are no runs.
    """
    output_dir = Path(output_dir)
    if next(output_dir.glob("sub-*/func/sub-*_statmap.nii.gz"), None) is None:  # what collect reads
        raise InputError("no participant-level maps in OUTPUT_DIR: run "
                         "`fmri-pain BIDS_DIR OUTPUT_DIR participant` first", path=output_dir)
    if not runs:
        raise InputError("no valid runs in the dataset for the group level", path=output_dir)
    timings = {}
    start = time.perf_counter()
    group = run_group(output_dir, runs, spec.group, conditions=spec.conditions, task=spec.task,
                      space=spec.space, first_level=spec.first_level, events=spec.events)
    timings["glm"] = time.perf_counter() - start
    model_files = write_model_files(output_dir, spec, model_name)

    permutations: list[PermutationOutput] | None = None
    if spec.inference.enabled:  # n_perm >= 1 is checked when the spec is loaded
        start = time.perf_counter()
        permutations = run_permutation_inference(group, spec.inference, alpha=spec.group.fwe_alpha)
        timings["permutation"] = time.perf_counter() - start

    equivalence_maps = []
    if spec.equivalence.tests and spec.equivalence.maps:
        from fmri_pain.glm.inference.equivalence import run_equivalence_maps

        start = time.perf_counter()
        equivalence_maps = run_equivalence_maps(group, spec.equivalence, spec.inference)
        timings["equivalence_maps"] = time.perf_counter() - start

    pathways = None
    if spec.pathways.enabled:
        from fmri_pain.pathways.run import run_pathway_analysis

        start = time.perf_counter()
        maps = group.subject_maps.dropna(subset=["condition"])
        pathway_runs = [r for r in runs if r.subject in group.subjects and r.confounds is not None]
        pathways = run_pathway_analysis(maps, pathway_runs or None, output_dir, spec.pathways,
                                        spec.events, conditions=spec.conditions,
                                        equivalence=spec.equivalence,
                                        carryover=spec.group.carryover,
                                        site_column=spec.group.site_column,
                                        responders=spec.responders)
        timings["pathways"] = time.perf_counter() - start
    responder_maps = run_responder_maps_step(group, pathways, spec)

    start = time.perf_counter()
    methods = methods_boilerplate(output_dir, runs, spec, group, permutations or [], pathways,
                                  equivalence_maps)
    crossover = bool({c.lower() for c in spec.conditions} & set(group.subject_maps["contrast"]))
    methods.append(MethodsSection("model", (
        f"The analysis spec that ran is `{model_files['spec'].name}`; it is also written as a BIDS "
        f"Stats Model (BIDSModelVersion {BSM_VERSION}), `{model_files['bsm'].name}`, with the settings "
        f"BIDS Stats Models has no field for under `Model.Software`"
        + (f": {CROSSOVER_NOTE}." if crossover else "."))))
    write_citation_files(output_dir, methods)
    report = write_group_report(group, spec, output_dir, permutations, pathways, methods=methods,
                                equivalence_maps=equivalence_maps)
    timings["report"] = time.perf_counter() - start
    LOGGER.info("group level timings: %s", {k: round(v, 1) for k, v in timings.items()})
    return GroupLevelResult(group, permutations or [], pathways, report, timings, equivalence_maps,
                            responder_maps=responder_maps, model_files=model_files)
