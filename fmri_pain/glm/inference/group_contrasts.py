"""Permutation inference for every group contrast the parametric models produced.

The same design matrices and contrasts as the parametric fits; the scheme
follows the design: sign flips for one-sample designs, shuffles within
subjects (exchangeability blocks) for the repeated-measures model, whole
subjects permuted across sequences for the between-subject sequence test, whole
subjects permuted within site for other between-subject effects, and the G
statistic with site variance groups when ``inference.variance_groups`` asks
(:mod:`fmri_pain.glm.inference.exchangeability`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from fmri_pain.bids.derivatives import provenance, space_of, statmap_path, write_tsv
from fmri_pain.bids.nifti import masked_maps
from fmri_pain.config.fields import SpecError
from fmri_pain.config.inference import InferenceSpec
from fmri_pain.glm.inference.exchangeability import Exchangeability, exchangeability
from fmri_pain.glm.inference.maps import write_permutation_maps
from fmri_pain.glm.inference.permutation import permutation_test
from fmri_pain.glm.inference.rearrangements import auto_scheme, count_rearrangements
from fmri_pain.glm.inference.resources import ResourceError, check_resources, estimate_resources
from fmri_pain.glm.inference.result import PermutationResult
from fmri_pain.glm.second_level.outputs import GroupMap, GroupResult, model_record, section_record
from fmri_pain.glm.second_level.thresholds import cluster_table

LOGGER = logging.getLogger(__name__)


@dataclass
class PermutationOutput:
    """One contrast's permutation result and the files written for it."""

    contrast: str
    route: str
    result: PermutationResult
    paths: dict[str, Path]
    clusters: pd.DataFrame


def run_permutation_inference(group: GroupResult, spec: InferenceSpec, *,
                              alpha: float) -> list[PermutationOutput]:
    """Permutation maps (max-t, cluster extent/mass, TFCE) for the group's primary contrasts.

    Parameters
    ----------
    group : GroupResult
        The parametric group level's output (designs, input maps, mask).
    spec : InferenceSpec
        The ``inference`` section: permutations, TFCE, cluster-forming p, seed, threads.
    alpha : float
        FWE level of the thresholded ``z`` maps and of the logged summary (the spec's
        ``group.fwe_alpha``).

    Returns
    -------
    list of PermutationOutput
    """
    mask_img = nib.load(group.mask)
    mask = np.asanyarray(mask_img.dataobj).astype(bool)
    entries = [entry for entry in group.maps if entry.route != "paired"]
    check_permutation_resources(entries, int(mask.sum()), spec)
    cache: dict[tuple, np.ndarray] = {}
    outputs = []
    for entry in entries:
        key = tuple(zip(map(str, entry.images), entry.flips))
        if key not in cache:
            cache[key] = masked_maps(entry.load_images(), mask_img)
        outputs.append(_permute_one(entry, cache[key], mask, mask_img, group, spec, alpha))
        LOGGER.info("permutation inference %s: %s", entry.contrast,
                    outputs[-1].result.summary(alpha))
    return outputs


def _exchange(entry: GroupMap, spec: InferenceSpec) -> Exchangeability:
    return exchangeability(entry.design, entry.key, spec.variance_groups)


def _scheme(entry: GroupMap, blocks: np.ndarray | None) -> str:
    # one map per subject and a between-subject effect: subjects are exchangeable across
    # sequences (within site when there are site blocks: ``auto`` then shuffles within them)
    return "permute" if entry.design.route == "sequence" and blocks is None else "auto"


def check_permutation_resources(entries: list[GroupMap], n_voxels: int, spec: InferenceSpec) -> None:
    """Refuse, before any permutation runs, a stage the machine's memory cannot hold.

    Every contrast is estimated (:func:`~fmri_pain.glm.inference.resources.estimate_resources`,
    after exhaustive enumeration when the distinct rearrangements are few);
    the estimate is logged. Raises :class:`~fmri_pain.config.fields.SpecError` naming
    ``inference.n_perm``.
    """
    total = 0.0
    for entry in entries:
        x = entry.design.design.to_numpy(dtype=float)
        blocks = _exchange(entry, spec).blocks
        rows = np.atleast_2d(np.asarray(entry.design.contrasts[entry.key], dtype=float))
        try:
            scheme = _scheme(entry, blocks)
            scheme = auto_scheme(x, rows, blocks) if scheme == "auto" else scheme
            n_distinct = count_rearrangements(x.shape[0], scheme, blocks=blocks, design=x)
        except ValueError:  # the test itself will report it
            n_distinct = spec.n_perm + 1
        n_eval = min(spec.n_perm, n_distinct - 1)
        estimate = estimate_resources(
            x.shape[0], n_voxels, n_eval, n_basis=rows.shape[0], tfce=spec.tfce,
            clusters=spec.cluster_forming_p is not None, n_jobs=spec.n_jobs)
        total += estimate.seconds
        try:
            check_resources(estimate)
        except ResourceError as exc:
            raise SpecError(f"inference.n_perm = {spec.n_perm}: contrast {entry.contrast} "
                            f"({x.shape[0]} maps x {n_voxels} voxels): {exc}") from None
    LOGGER.info("permutation stage: %d contrasts, about %.0f s estimated", len(entries), total)


def _permute_one(entry: GroupMap, Y: np.ndarray, mask: np.ndarray, mask_img: nib.Nifti1Image,
                 group: GroupResult, spec: InferenceSpec, alpha: float) -> PermutationOutput:
    design = entry.design
    exchange = _exchange(entry, spec)
    two_sided = entry.stat_type == "t"
    result = permutation_test(
        Y, design.design.to_numpy(), np.asarray(design.contrasts[entry.key]), n_perm=spec.n_perm,
        scheme=_scheme(entry, exchange.blocks), blocks=exchange.blocks, two_sided=two_sided,
        mask=mask, tfce=spec.tfce,
        cluster_threshold=spec.cluster_forming_p, random_state=spec.seed, n_jobs=spec.n_jobs,
        accel=spec.accel, variance_groups=exchange.variance_groups)
    for note in exchange.notes:
        LOGGER.warning("permutation inference %s: %s", entry.contrast, note)
        result.warnings.append(note)
    mirrored = sorted({s for s, f in zip(design.rows["subject"], entry.flips) if f})
    sidecar = provenance(entry.images, {"inference": section_record(spec)},
                         dataset=group.output_dir,
                         **{**model_record(design, entry.key, entry.subjects, mirrored, entry.warnings),
                            "Description": f"Permutation inference on the {design.route} model"
                                           + (" with the G statistic (site variance groups)"
                                              if exchange.variance_groups is not None else "")
                                           + " (see Parameters and PermutationSummary)"},
                         **exchange.record)
    task = group.task
    space = space_of(group.mask)  # the group mask is named by the space of the subject maps
    paths = write_permutation_maps(result, mask_img, group.output_dir, contrast=entry.contrast,
                                   task=task, alpha=alpha, sidecar=sidecar, space=space)
    z_fwe = nib.load(paths["z_fwe"]) if "z_fwe" in paths else None
    clusters = (cluster_table(z_fwe, 1e-6, 0, two_sided) if z_fwe is not None
                and np.any(np.asanyarray(z_fwe.dataobj)) else cluster_table(z_fwe, np.inf))
    table_path = statmap_path(group.output_dir, contrast=entry.contrast, stat="z", task=task,
                              desc="perm", space=space)
    write_tsv(clusters, table_path.with_name(
        table_path.name.replace("_stat-z_statmap.nii.gz", "_clusters.tsv")))
    return PermutationOutput(entry.contrast, design.route, result, paths, clusters)


def inference_warnings(outputs: list[PermutationOutput]) -> list[str]:
    """The permutation stage's recorded warnings, one line each, named by contrast."""
    return [f"{out.contrast}: {note}" for out in outputs for note in out.result.warnings]


def inference_summary(outputs: list[PermutationOutput], alpha: float) -> pd.DataFrame:
    """One row per contrast: scheme, statistic (t, F or G), permutations used (the observed
    one included), distinct rearrangements, whether they were all enumerated, the smallest
    attainable p, thresholds and significant voxel counts."""
    rows = []
    for out in outputs:
        s = out.result.summary(alpha)
        rows.append({"contrast": out.contrast, "route": out.route, "scheme": s["scheme"],
                     "statistic": ("G (site variance groups)" if out.result.variance_groups
                                   else s["stat_type"]),
                     "permutations": s["n_rearrangements"],
                     "distinct rearrangements": s["n_distinct"],
                     "exhaustive": "yes" if s["exhaustive"] else "no (random)",
                     "smallest attainable p": s["min_p"], "max stat": s["max_stat"],
                     "FWE threshold": s["fwe_threshold"], "voxels FWE": s["n_voxels_fwe"],
                     "voxels TFCE FWE": s.get("n_voxels_tfce_fwe"),
                     "voxels cluster-mass FWE": s.get("n_voxels_cluster_mass_fwe"),
                     "clusters": int(out.clusters["Cluster ID"].astype(str).str.isdigit().sum())
                     if not out.clusters.empty else 0})
    return pd.DataFrame(rows)
