"""The group level end to end: GLMs, permutation inference, pathways, report.

Each stage gets its own section of the spec; the report receives what they wrote.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fmri_pain.bids.derivatives import write_json
from fmri_pain.bids.naming import bids_filename
from fmri_pain.bids.runs import Run
from fmri_pain.config.bsm import validate_bsm
from fmri_pain.config.bsm_export import BSM_VERSION, CROSSOVER_NOTE, spec_to_bsm
from fmri_pain.config.spec import AnalysisSpec
from fmri_pain.errors import InputError
from fmri_pain.execution.progress import StageProgress
from fmri_pain.execution.stages import StageClock, stage_rows, write_stage_log
from fmri_pain.execution.task import where
from fmri_pain.glm.inference.group_contrasts import PermutationOutput, run_permutation_inference
from fmri_pain.glm.inference.responder_maps import ResponderMapsOutput
from fmri_pain.glm.second_level.fit import run_group
from fmri_pain.glm.second_level.outputs import GroupResult
from fmri_pain.pipeline.responders import run_responder_maps_step
from fmri_pain.report.group import methods_boilerplate, write_group_report
from fmri_pain.report.methods import MethodsSection, write_citation_files

LOGGER = logging.getLogger(__name__)

# The group level's stages, in order. Thresholds (FDR, Bonferroni-FWE, cluster tables)
# are computed by glm.second_level with each model's maps, so they are one stage with them.
MODELS = "models and thresholds"
PERMUTATIONS = "permutations"
EQUIVALENCE_MAPS = "equivalence maps"
PATHWAYS = "pathways"
RESPONDER_MAPS = "responder maps"
REPORT = "report"


@dataclass
class GroupLevelResult:
    """What the group level wrote."""

    group: GroupResult
    permutations: list[PermutationOutput]
    pathways: dict[str, Path] | None
    report: Path
    timings: dict[str, float] = field(default_factory=dict)
    """Stage -> wall seconds (the stage names above)."""
    equivalence_maps: list = field(default_factory=list)
    """Voxelwise margin tests (``glm.inference.equivalence.EquivalenceMapOutput``)."""
    responder_maps: ResponderMapsOutput | None = None
    stage_log: Path | None = None
    """``logs/group_stages_<time>.tsv``: wall, CPU and peak memory of every stage."""
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
             "bsm": write_json(model, output_dir / bids_filename({"model": model["Name"]}, "smdl", ".json"))}
    LOGGER.info("model written as a BIDS Stats Model (%s); %s", paths["bsm"].name, CROSSOVER_NOTE)
    return paths


def left_out_reasons(errors_by_subject: Mapping[str, Sequence[InputError]]) -> dict[str, str]:
    """Subject -> why it is left out of the group: its first input error, naming the file, on one line.

    Parameters
    ----------
    errors_by_subject : mapping
        Subject -> its input errors (e.g. :func:`fmri_pain.bids.validator.subject_input_errors`).
    """
    reasons = {}
    for subject, errors in sorted(errors_by_subject.items()):
        if not errors:
            continue
        first = errors[0]
        more = f" (+{len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        where = f" [{first.path}]" if first.path is not None else ""
        reasons[subject] = f"{first.reason}{where}{more}"
    return reasons


def run_group_level(output_dir: Path | str, runs: list[Run], spec: AnalysisSpec, *,
                    excluded: Mapping[str, str] | None = None, model_name: str | None = None,
                    verbosity: int = 1) -> GroupLevelResult:
    """Fit the group models, run permutation inference and the pathway analysis, write group.html.

    Parameters
    ----------
    output_dir : path
        Derivatives folder with the participant level's outputs.
    runs : list of Run
        The dataset's runs (conditions, periods, covariates; preprocessed
        BOLD for connectivity).
    spec : AnalysisSpec
    excluded : mapping of str to str, optional
        Subjects to leave out although OUTPUT_DIR may hold their maps (e.g. the BIDS
        validator rejects their files), with the reason: each is warned of (log,
        ``group.warnings``, the report). Their runs should not be in ``runs``.
    verbosity : int
        0 quiet, 1 progress (a bar whose steps are the stages on a terminal, else a
        line per stage), 2 also a line when each stage ends.
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
    stages = [MODELS, *([PERMUTATIONS] if spec.inference.enabled else []),
              *([EQUIVALENCE_MAPS] if spec.equivalence.tests and spec.equivalence.maps else []),
              *([PATHWAYS] if spec.pathways.enabled else []),
              *([RESPONDER_MAPS] if spec.responders.active else []), REPORT]
    started = datetime.datetime.now()
    with StageProgress(stages, verbosity) as progress:
        with progress.stage(MODELS):
            group = run_group(output_dir, runs, spec.group, conditions=spec.conditions,
                              task=spec.task, space=spec.space, first_level=spec.first_level,
                              events=spec.events, excluded=excluded)
        model_files = write_model_files(output_dir, spec, model_name)

        permutations: list[PermutationOutput] | None = None
        if PERMUTATIONS in stages:  # n_perm >= 1 is checked when the spec is loaded
            with progress.stage(PERMUTATIONS):
                permutations = run_permutation_inference(group, spec.inference,
                                                         alpha=spec.group.fwe_alpha)

        equivalence_maps = []
        if EQUIVALENCE_MAPS in stages:
            from fmri_pain.glm.inference.equivalence import run_equivalence_maps

            with progress.stage(EQUIVALENCE_MAPS):
                equivalence_maps = run_equivalence_maps(group, spec.equivalence, spec.inference)

        pathways = None
        if PATHWAYS in stages:
            from fmri_pain.pathways.run import run_pathway_analysis

            with progress.stage(PATHWAYS):
                maps = group.subject_maps.dropna(subset=["condition"])
                pathway_runs = [r for r in runs
                                if r.subject in group.subjects and r.confounds is not None]
                pathways = run_pathway_analysis(maps, pathway_runs or None, output_dir,
                                                spec.pathways.with_design_of(spec.first_level),
                                                spec.events,
                                                conditions=spec.conditions,
                                                equivalence=spec.equivalence,
                                                carryover=spec.group.carryover,
                                                site_column=spec.group.site_column,
                                                responders=spec.responders)
        responder_maps = None
        if RESPONDER_MAPS in stages:
            with progress.stage(RESPONDER_MAPS):
                responder_maps = run_responder_maps_step(group, pathways, spec)

        with progress.stage(REPORT):
            methods = methods_boilerplate(output_dir, runs, spec, group, permutations or [],
                                          pathways, equivalence_maps)
            crossover = bool({c.lower() for c in spec.conditions} & set(group.subject_maps["contrast"]))
            methods.append(MethodsSection("model", (
                f"The analysis spec that ran is `{model_files['spec'].name}`; it is also written as a "
                f"BIDS Stats Model (BIDSModelVersion {BSM_VERSION}), `{model_files['bsm'].name}`, with "
                f"the settings BIDS Stats Models has no field for under `Model.Software`"
                + (f": {CROSSOVER_NOTE}." if crossover else "."))))
            write_citation_files(output_dir, methods)
            report = write_group_report(group, spec, output_dir, permutations, pathways,
                                        methods=methods, equivalence_maps=equivalence_maps)
    clock = progress.clock
    stage_log = _write_stage_log(clock, output_dir / "logs", started)
    timings = clock.seconds()
    LOGGER.info("group level timings: %s", {k: round(v, 1) for k, v in timings.items()})
    return GroupLevelResult(group, permutations or [], pathways, report, timings, equivalence_maps,
                            responder_maps=responder_maps, stage_log=stage_log,
                            model_files=model_files)


def _write_stage_log(clock: StageClock, log_dir: Path, started: datetime.datetime) -> Path | None:
    records = [*clock.records, clock.total()]
    try:
        return write_stage_log(stage_rows(records, level="group", worker=where()), log_dir,
                               "group", started)
    except OSError as exc:  # the results are written; only their timing record is missing
        LOGGER.warning("cannot write the group stage table under %s: %s", log_dir,
                       exc.strerror or exc)
        return None
