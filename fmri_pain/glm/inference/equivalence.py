"""Voxelwise non-inferiority, superiority and equivalence (TOST) maps by permutation.

For a t contrast ``c`` of a group design ``X`` (the paired route's difference maps: intercept =
the condition difference ``D`` at equal periods) each one-sided test against a margin ``m`` is a
one-sided permutation test of the existing engine
(:func:`~fmri_pain.glm.inference.permutation.permutation_test`: sign flips, Freedman-Lane with the
design's nuisance columns, max-t FWE) on the data shifted so that its null is ``c'b = 0``:

- ``D > -m`` (non-inferiority, and the first test of TOST): ``Y + m s``;
- ``D > m`` (superiority): ``Y - m s``;
- ``D < m`` (the second test of TOST): ``m s - Y``,

with ``s = X c / (c'c)``, the change of the data that moves ``c'b`` by 1 and leaves the other
contrasts and the residuals unchanged (``s`` is the intercept column for the intercept
contrast). The two tests of TOST use the same rearrangements; the TOST p value (uncorrected and
FWE) of a voxel is the larger of its two, so FWE p >= uncorrected p and no p is below the larger
smallest attainable p of the two. Margins are in the unit of the maps (percent signal change):
a ``dz`` margin is refused when the spec is loaded (a per-voxel SD plugged into the margin would
not be a test of a fixed margin).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from fmri_pain.bids.derivatives import provenance, space_of, statmap_path, write_nifti
from fmri_pain.bids.nifti import masked_maps
from fmri_pain.config.equivalence import EquivalenceSpec, EquivalenceTest
from fmri_pain.config.inference import InferenceSpec
from fmri_pain.glm.inference.permutation import permutation_test
from fmri_pain.glm.inference.result import PermutationResult
from fmri_pain.glm.second_level.outputs import GroupMap, GroupResult, model_record

LOGGER = logging.getLogger(__name__)

MAP_DESCS = {"non-inferiority": "noninferior", "superiority": "superior", "equivalence": "tost"}
"""``desc-`` of each kind's maps (``desc-<label>Uncorrected`` for the uncorrected p)."""

HYPOTHESES = {"non-inferiority": "H0: D <= -margin vs D > -margin (one-sided)",
              "superiority": "H0: D <= margin vs D > margin (one-sided)",
              "equivalence": "H0: |D| >= margin vs -margin < D < margin (two one-sided tests)"}


@dataclass
class MarginTestResult:
    """A voxelwise margin test: the one-sided permutation test(s) and their combination."""

    kind: str
    margin: float
    estimate: np.ndarray
    """``c'b`` per voxel (the unshifted contrast estimate)."""
    tests: list[PermutationResult]
    """The test of ``D > bound`` (non-inferiority, superiority; first of TOST), then ``D < m``."""

    @property
    def p_fwe(self) -> np.ndarray:
        """Max-t FWE p per voxel (TOST: the larger of the two tests')."""
        return np.max([t.p_fwe for t in self.tests], axis=0)

    @property
    def p_uncorrected(self) -> np.ndarray:
        """Uncorrected permutation p per voxel (TOST: the larger of the two)."""
        return np.max([t.p_uncorrected for t in self.tests], axis=0)

    @property
    def stat(self) -> np.ndarray:
        """t of the shifted data (TOST: the smaller of the two one-sided t, the limiting test)."""
        return np.min([t.stat for t in self.tests], axis=0)

    @property
    def min_p(self) -> float:
        """The smallest p value these rearrangements can give."""
        return max(t.min_p for t in self.tests)

    def sidecar_fields(self) -> dict:
        """The rearrangements of the test (those of its first one-sided test; TOST's second
        uses the same) with the smallest attainable p of the combined p values."""
        fields = dict(self.tests[0].sidecar_fields())
        fields["MinimumAttainableP"] = self.min_p
        fields["PermutationWarnings"] = sorted({w for t in self.tests for w in t.warnings})
        return fields


def shift_direction(design: np.ndarray, contrast: np.ndarray) -> np.ndarray:
    """``s = X c / (c'c)``: adding ``a s`` to the data adds ``a`` to ``c'b`` and nothing else."""
    x = np.asarray(design, dtype=float)
    c = np.asarray(contrast, dtype=float)
    return x @ c / (c @ c)


def margin_permutation_test(Y: np.ndarray, design: np.ndarray, contrast: np.ndarray, kind: str,
                            margin: float, **kwargs) -> MarginTestResult:
    """One-sided permutation test(s) of a t contrast against a margin, max-t FWE corrected.

    Parameters
    ----------
    Y : ndarray, shape (n_maps, n_voxels)
    design : ndarray, shape (n_maps, n_regressors)
    contrast : ndarray, shape (n_regressors,)
        A t contrast (one row).
    kind : {"non-inferiority", "superiority", "equivalence"}
    margin : float
        In the unit of ``Y``.
    **kwargs
        Passed to :func:`permutation_test` (``n_perm``, ``random_state``, ``n_jobs``, ``mask``,
        ``blocks`` ...); ``two_sided``, TFCE and clusters are not used.

    Returns
    -------
    MarginTestResult
    """
    contrast = np.asarray(contrast, dtype=float)
    if contrast.ndim != 1:
        raise ValueError("margin tests need a t contrast (one row of weights)")
    Y = np.asarray(Y, dtype=np.float64)
    x = np.asarray(design, dtype=np.float64)
    s = shift_direction(x, contrast)[:, None]
    estimate = contrast @ np.linalg.pinv(x) @ Y
    shifted = {"non-inferiority": [Y + margin * s], "superiority": [Y - margin * s],
               "equivalence": [Y + margin * s, margin * s - Y]}
    if kind not in shifted:
        raise ValueError(f"unknown kind {kind!r}; choose from {tuple(shifted)}")
    kwargs = {k: v for k, v in kwargs.items() if k not in ("two_sided", "tfce", "cluster_threshold")}
    tests = [permutation_test(y, x, contrast, two_sided=False, **kwargs) for y in shifted[kind]]
    return MarginTestResult(kind, float(margin), estimate, tests)


@dataclass
class EquivalenceMapOutput:
    """One test's maps as written (``paths`` empty and ``note`` set when it could not run)."""

    test: EquivalenceTest
    route: str | None
    result: MarginTestResult | None
    paths: dict[str, Path] = field(default_factory=dict)
    note: str = ""


def _entry_for(group: GroupResult, contrast: str) -> GroupMap | None:
    """The paired route's map of a difference, else the one-sample map of the contrast."""
    for route in ("paired", "one-sample"):
        for entry in group.maps:
            if entry.contrast == contrast and entry.route == route and entry.key == "intercept":
                return entry
    return None


def run_equivalence_maps(group: GroupResult, section: EquivalenceSpec,
                         inference: InferenceSpec) -> list[EquivalenceMapOutput]:
    """Voxelwise margin tests of the ``equivalence`` section on the group's maps, written.

    Parameters
    ----------
    group : GroupResult
        The parametric group level (paired difference maps, designs, mask).
    section : EquivalenceSpec
        The tests, ``alpha`` (level of each one-sided test, FWE) and ``maps``.
    inference : InferenceSpec
        Permutations (``n_perm``, ``seed``, ``n_jobs``) of the engine.

    Returns
    -------
    list of EquivalenceMapOutput, one per test (a test without a group map of its contrast is
    returned with its ``note`` and logged as a warning).
    """
    mask_img = nib.load(group.mask)
    mask = np.asanyarray(mask_img.dataobj).astype(bool)
    space = space_of(group.mask)
    outputs = []
    for test in section.tests:
        entry = _entry_for(group, test.contrast)
        if entry is None:
            note = (f"no paired or one-sample group map of {test.contrast} (too few subjects with "
                    "both conditions?): no voxelwise map")
            LOGGER.warning("equivalence %s %s: %s", test.kind, test.contrast, note)
            outputs.append(EquivalenceMapOutput(test, None, None, note=note))
            continue
        design = entry.design
        Y = masked_maps(entry.load_images(), mask_img)
        result = margin_permutation_test(
            Y, design.design.to_numpy(dtype=float), np.asarray(design.contrasts[entry.key]),
            test.kind, test.margin, n_perm=inference.n_perm, random_state=inference.seed,
            n_jobs=inference.n_jobs, mask=mask)
        mirrored = sorted({s for s, f in zip(design.rows["subject"], entry.flips) if f})
        record = model_record(design, entry.key, entry.subjects, mirrored, entry.warnings)
        sidecar = provenance(entry.images, {"equivalence": {
            "contrast": test.contrast, "kind": test.kind, "margin": test.margin, "unit": test.unit,
            "alpha": section.alpha}, "inference": {"n_perm": inference.n_perm,
                                                   "seed": inference.seed}},
            dataset=group.output_dir, **{**record, "Description": (
                f"{test.kind} test of {test.contrast} (D) against a margin of {test.margin:g} "
                f"{test.unit} on the {design.route} route's maps: one-sided permutation test(s) "
                "(sign flips, max-t FWE) of the maps shifted by the margin"
                + ("; TOST p = the larger of the two one-sided p" if test.kind == "equivalence"
                   else ""))})
        sidecar.update(Kind=test.kind, Hypothesis=HYPOTHESES[test.kind], Margin=test.margin,
                       MarginUnit="percent signal change (psc), the unit of the subject maps",
                       Alpha=section.alpha, **result.sidecar_fields(),
                       NumberOfVoxelsDeclared=int(np.sum(result.p_fwe < section.alpha)))
        outputs.append(EquivalenceMapOutput(test, design.route, result, write_margin_maps(
            result, mask_img, group.output_dir, contrast=test.contrast, task=group.task,
            space=space, sidecar=sidecar)))
        LOGGER.info("equivalence %s %s: %d voxels at FWE p < %g", test.kind, test.contrast,
                    sidecar["NumberOfVoxelsDeclared"], section.alpha)
    return outputs


def write_margin_maps(result: MarginTestResult, mask_img: nib.Nifti1Image, output_dir: Path | str,
                      *, contrast: str, task: str | None, space: str | None,
                      sidecar: dict) -> dict[str, Path]:
    """``desc-<label>`` maps under ``group/``: ``stat-t``, ``stat-logp`` and ``stat-p`` (FWE),
    ``stat-effect``, and ``desc-<label>Uncorrected_stat-{logp,p}``; ``<label>`` is
    :data:`MAP_DESCS` of the kind."""
    mask = np.asanyarray(mask_img.dataobj).astype(bool)
    desc = MAP_DESCS[result.kind]
    limiting = " (TOST: the smaller of the two one-sided t)" if result.kind == "equivalence" else ""
    maps = {"t": (desc, "t", result.stat, f"t of the maps shifted by the margin{limiting}"),
            "logp_fwe": (desc, "logp", -np.log10(result.p_fwe),
                         "-log10 max-t FWE p" + (" (the larger of the two tests')" if limiting else "")),
            "logp_uncorrected": (f"{desc}Uncorrected", "logp", -np.log10(result.p_uncorrected),
                                 "-log10 uncorrected permutation p" + (
                                     " (the larger of the two tests')" if limiting else "")),
            "effect": (desc, "effect", result.estimate, "the contrast estimate D (unshifted, psc)")}
    for key in ("logp_fwe", "logp_uncorrected"):  # stat-p beside each stat-logp, p = 10**-logp
        label, _, values, meaning = maps[key]
        maps[key.replace("logp", "p", 1)] = (label, "p", 10.0 ** -values,
                                             f"p = 10^-logp of the stat-logp map ({meaning}); "
                                             "1 outside the mask")
    written = {}
    for key, (label, stat, values, meaning) in maps.items():
        vol = np.full(mask.shape, 1.0 if stat == "p" else 0.0, dtype=np.float32)
        vol[mask] = values
        img = nib.Nifti1Image(vol, mask_img.affine)
        img.header.set_xyzt_units("mm", "sec")
        path = statmap_path(output_dir, contrast=contrast, stat=stat, task=task, desc=label,
                            space=space)
        path.parent.mkdir(parents=True, exist_ok=True)
        written[key] = write_nifti(img, path, sidecar={**sidecar, "StatisticType": stat,
                                                       "StatisticDescription": meaning})
    return written
