"""The ``group`` section: the crossover group model and its parametric thresholds."""

from __future__ import annotations

from typing import Literal

from pydantic import StrictBool, StrictFloat, StrictInt, StrictStr

from fmri_pain.config.fields import bounded, spec_dataclass


@spec_dataclass
class GroupSpec:
    """Group-level (crossover) model and parametric thresholds."""

    covariates: tuple[StrictStr, ...] = ()
    """Columns of sessions.tsv / participants.tsv added (mean-centred) to the group models."""
    fdr_q: StrictFloat = bounded(0.05, 0, 1, lo_open=True, hi_open=True)
    """False discovery rate of the ``desc-fdr`` maps and cluster tables."""
    fwe_alpha: StrictFloat = bounded(0.05, 0, 1, lo_open=True, hi_open=True)
    """Family-wise error rate of the ``desc-fwe`` (Bonferroni) and permutation maps."""
    cluster_forming_z: StrictFloat = bounded(3.1, 0, 38, lo_open=True)
    """Height threshold (z) of cluster tables."""
    min_cluster_size: StrictInt = bounded(0, 0, 10_000_000, unit="voxels")
    """Cluster-extent threshold in voxels applied to the thresholded maps."""
    smoothing_fwhm: StrictFloat | None = bounded(None, 0, 30, unit="mm")
    """Extra smoothing of subject maps at group level."""
    carryover: StrictBool = False
    """Model first-order carry-over (the condition of the previous period; none in period 1) in the
    repeated-measures maps and the pathway models: ``carryoverF``, ``carryover<Cond>`` and the
    condition contrasts adjusted for it, how much the condition estimates move, and a
    between-subject sequence test (``sequenceF``, subjects permuted across sequences)."""
    flip_to_pain_side: Literal["right", "left", "none"] = "right"
    """Mirror (x -> -x) the maps of patients whose ``pain_side`` (participants.tsv) is the other
    side, so contralateral responses overlap; ``none`` keeps every map as acquired."""
    site_column: StrictStr | None = "site"
    """Column of participants.tsv naming each subject's site (multi-centre trials). Used only when
    the column exists and has two or more values (the group log and every group sidecar say so):
    mean-centred site indicators (one per site but the first) are added to the one-sample and
    paired models and to the ROI models; in the repeated-measures model site is between-subject,
    collinear with the subject columns, and not added (a note says so). Permutations of whole
    subjects stay within site (exchangeability blocks). ``null`` (or no such column): no site terms."""
