"""The ``group`` section: the crossover group model and its parametric thresholds."""

from __future__ import annotations

from dataclasses import field
from typing import Literal

from pydantic import StrictBool, StrictFloat, StrictInt, StrictStr

from fmri_pain.config.fields import LABEL_RE, SpecError, bounded, shown, spec_dataclass


@spec_dataclass
class BetweenSubjectsTest:
    """One dataset-level between-subject test of a subject-level contrast (one map per subject)."""

    name: StrictStr
    """Label of the test (letters and digits). With ``contrast`` set, the maps are
    ``contrast-<name>``; with ``contrast`` null, ``contrast-<subject contrast><Name>`` for every
    subject-level contrast with one map per subject (e.g. ``scsAge``)."""
    design: Literal["two-group", "covariate"]
    """``two-group``: one indicator per level of ``column`` (cell means), t test of A - B;
    ``covariate``: intercept + ``column`` (mean-centred), t test of its slope. Both adjust for
    ``group.covariates`` (mean-centred, the tested column excepted)."""
    column: StrictStr
    """Column of participants.tsv / sessions.tsv: two levels (``two-group``) or numeric
    (``covariate``). Subjects without a value are left out, with a warning naming them."""
    contrast: StrictStr | None = None
    """The subject-level contrast tested, e.g. ``scs``, ``stim`` or a trial contrast such as
    ``drgsMinusScs``; null: every subject-level contrast (as a BIDS Stats Model dataset node)."""
    levels: tuple[StrictStr, ...] = ()
    """``two-group`` only: ``[A, B]`` (test A - B), ``[A]`` (A minus the column's other level), or
    empty (the column's two values in sorted order)."""


def check_between_subjects(tests: tuple[BetweenSubjectsTest, ...], source: str) -> None:
    """Rules of ``group.between_subjects`` that involve more than one key.

    Raises
    ------
    SpecError
        Naming the entry: a name or contrast that is not a BIDS label, a name used twice,
        ``levels`` with a covariate design, more than two or repeated levels.
    """
    seen: set[tuple[str, str | None]] = set()
    for i, test in enumerate(tests):
        key = f"group.between_subjects[{i}]"
        for what, value in (("name", test.name), ("contrast", test.contrast)):
            if value is not None and not LABEL_RE.fullmatch(value):
                raise SpecError(f"{source}: {key}.{what} = {shown(value)} must be letters and digits only "
                                "(it names the maps)")
        if not test.column:
            raise SpecError(f"{source}: {key}.column must name a column of participants.tsv")
        if test.design == "covariate" and test.levels:
            raise SpecError(f"{source}: {key}.levels: only a two-group design has levels")
        if len(test.levels) > 2 or len(set(test.levels)) != len(test.levels):
            raise SpecError(f"{source}: {key}.levels = {shown(list(test.levels))}: give one or two "
                            "distinct levels (A, or A and B: the test is A - B)")
        if (test.name, test.contrast) in seen:
            raise SpecError(f"{source}: {key}: the name {test.name!r} is used twice for the same contrast")
        seen.add((test.name, test.contrast))



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
    between_subjects: tuple[BetweenSubjectsTest, ...] = field(default_factory=tuple)
    """Dataset-level between-subject tests, each a mapping ``{name, design, column, contrast,
    levels}`` (keys in section ``group.between_subjects[]``): a two-group comparison or a
    covariate's slope on the subject maps of one contrast; maps ``contrast-<name>_stat-
    {effect,t,z,p}`` (OLS, nilearn SecondLevelModel), permuted with the other group maps when
    ``inference`` is on. Empty: none."""
