"""What may be exchanged in a group contrast's permutation test: blocks and variance groups.

The scheme follows the design (:func:`~fmri_pain.glm.inference.rearrangements.auto_scheme`):

- the repeated-measures model shuffles condition maps within subjects (blocks = subjects);
  subjects are nested in sites, so these shuffles stay within site too;
- an intercept-like effect (one-sample designs) is tested by sign flips of independent
  subjects, which site blocks do not restrict: no blocks;
- any other between-subject effect (a covariate's slope) permutes whole subjects, which in a
  multi-centre trial must stay within site: blocks = sites.

Variance groups (``inference.variance_groups``): ``site`` puts each site in its own group,
``auto`` does so when there are two or more sites with at least two subjects each and every
site keeps residual degrees of freedom under the design, ``none`` never. The decision and
its reason are recorded in the sidecars (``ExchangeabilityBlocks``, ``VarianceGroupsUsed``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fmri_pain.config.fields import SpecError
from fmri_pain.glm.inference.rearrangements import auto_scheme
from fmri_pain.glm.inference.variance_groups import check_groups
from fmri_pain.glm.second_level.models import GroupDesign

__all__ = ["Exchangeability", "exchangeability"]

MIN_SUBJECTS_PER_GROUP = 2
"""``auto`` variance groups need at least this many subjects in every site."""


@dataclass
class Exchangeability:
    """Blocks and variance groups of one contrast's test, and their sidecar record."""

    blocks: np.ndarray | None
    variance_groups: np.ndarray | None
    record: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def exchangeability(design: GroupDesign, key: str, variance_groups: str = "auto") -> Exchangeability:
    """Exchangeability blocks and variance groups of the contrast ``key`` of ``design``.

    Parameters
    ----------
    design : GroupDesign
        The group design (``rows`` with ``subject``; ``sites`` when the site is used).
    key : str
        The contrast of ``design.contrasts``.
    variance_groups : {"auto", "none", "site"}
        ``inference.variance_groups``.

    Returns
    -------
    Exchangeability

    Raises
    ------
    SpecError
        ``variance_groups = "site"`` without sites, or with a site whose variance cannot
        be estimated under the design.
    """
    if variance_groups not in ("auto", "none", "site"):
        raise SpecError(f"inference.variance_groups = {variance_groups!r}: choose auto, none or site")
    x = design.design.to_numpy(dtype=float)
    c = np.atleast_2d(np.asarray(design.contrasts[key], dtype=float))
    sites = getattr(design, "sites", ())  # designs built before the site term have none
    sites = np.asarray(sites, dtype=object) if len(sites) else None
    notes: list[str] = []
    if design.route == "repeated":
        blocks = design.rows["subject"].astype(str).to_numpy()
        unit = "subject"
        how = "condition maps shuffled within subjects" + (
            " (subjects are nested in sites, so the shuffles stay within site)"
            if sites is not None else "")
    elif auto_scheme(x, c, None) == "signflip":
        blocks, unit = None, None
        how = ("sign flips of independent subjects" + (
            ": site blocks do not restrict them" if sites is not None else ""))
    elif sites is not None:
        blocks, unit = sites.astype(str), "site"
        how = "whole subjects permuted within site"
    else:
        blocks, unit = None, None
        how = "whole subjects permuted freely"
    record = {"ExchangeabilityBlocks": {
        "Unit": unit, "Description": how,
        "Blocks": None if blocks is None else {str(b): int(n) for b, n in
                                               zip(*np.unique(blocks, return_counts=True))}}}
    groups, reason = _variance_groups(x, design, sites, variance_groups)
    if groups is None and reason and variance_groups != "none" and sites is not None:
        # a single-site trial has nothing to warn about; a multi-site one is told why not
        notes.append(f"variance groups not used: {reason}")
    record["VarianceGroupsUsed"] = {
        "Requested": variance_groups, "Unit": "site" if groups is not None else None,
        "Reason": reason or "one group per site"}
    return Exchangeability(blocks, groups, record, notes)


def _variance_groups(x: np.ndarray, design: GroupDesign, sites: np.ndarray | None,
                     mode: str) -> tuple[np.ndarray | None, str | None]:
    if mode == "none":
        return None, "inference.variance_groups is none"
    if sites is None:
        if mode == "site":
            raise SpecError("inference.variance_groups = site, but the group design has no site "
                            "(group.site_column missing from participants.tsv or one site only)")
        return None, "no site in the design (one variance group)"
    per_site = {}
    for site, subject in zip(sites, design.rows["subject"].astype(str)):
        per_site.setdefault(str(site), set()).add(subject)
    small = sorted(s for s, subs in per_site.items() if len(subs) < MIN_SUBJECTS_PER_GROUP)
    try:
        check_groups(x, sites.astype(str))
    except ValueError as exc:
        if mode == "site":
            raise SpecError(f"inference.variance_groups = site: {exc}") from None
        return None, str(exc)
    if small and mode == "auto":
        return None, (f"site(s) {', '.join(small)} have fewer than {MIN_SUBJECTS_PER_GROUP} "
                      "subjects")
    return sites.astype(str), None
