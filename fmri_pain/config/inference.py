"""The ``inference`` section: permutation inference (max-t, TFCE, cluster mass)."""

from __future__ import annotations

from typing import Literal

import pydantic
from pydantic import StrictBool, StrictFloat, StrictInt

from fmri_pain.config.fields import bounded, key_error, spec_dataclass

MAX_JOBS = 1024
"""Most threads of the permutation engine."""


@spec_dataclass
class InferenceSpec:
    """Nonparametric (permutation) inference at group level."""

    enabled: StrictBool = True
    """Run permutation inference for every group contrast."""
    n_perm: StrictInt = bounded(1000, 1, 1_000_000)
    """Random rearrangements (sign flips / within-subject shuffles) per contrast; when the design has
    no more than ``n_perm + 1`` distinct ones, all are used once each (exact test)."""
    tfce: StrictBool = True
    """Also compute TFCE (H = 2, E = 0.5, 26-connectivity) with its FWE p map."""
    cluster_forming_p: StrictFloat = bounded(0.001, 0, 1, lo_open=True, hi_open=True)
    """Uncorrected p of the cluster-forming threshold of cluster-extent / cluster-mass inference."""
    seed: StrictInt = bounded(0, 0, 2**32 - 1)
    """Seed of the random rearrangements (results are reproducible)."""
    n_jobs: StrictInt = pydantic.Field(1, json_schema_extra={"anyOf": [{"const": -1}, {"type": "integer", "minimum": 1, "maximum": MAX_JOBS}]})
    """Threads of the permutation engine (voxel ranges for max-t; chunks of permutations with TFCE or clusters)."""
    accel: Literal["none", "tail"] = "none"
    """``tail``: FWE p-values of max-t, TFCE and cluster mass from a generalised Pareto fit to the upper tail of
    their permutation nulls (PALM's ``-accel tail``, Winkler et al. 2016), so they can go below 1 / n_perm; the
    plain permutation p-value stays where no fit passes its goodness-of-fit test. The fits are recorded in the
    sidecars (``TailAcceleration``, ``TailFits``)."""
    variance_groups: Literal["auto", "none", "site"] = "auto"
    """Variance groups of the permutation tests (PALM's ``-vg``): with variance groups the statistic is
    the G statistic of Winkler et al. 2014 (a Welch / Aspin-Welch generalisation of t and F: each
    group has its own residual variance) and the FWE is over max G; rearrangements keep every
    observation in its group (sign flips; permutations within site). ``site``: one group per site of
    ``group.site_column`` (an error when there is no site or a site has too few maps to estimate
    its variance); ``auto``: site groups when the site column is used (two or more sites) and every
    site has at least two subjects (and residual degrees of freedom in each model), else none;
    ``none``: one variance for all maps (t / F). With variance groups TFCE enhances the z(G) maps (G
    referred to t / F with its per-voxel df) and cluster inference is not computed (a recorded
    warning in the log and sidecars)."""

    @pydantic.field_validator("n_jobs")
    @classmethod
    def _all_cores_or_a_count(cls, value: int) -> int:
        if value != -1 and not 1 <= value <= MAX_JOBS:
            raise key_error(f"= {{value}} is out of range (-1 or 1 ≤ x ≤ {MAX_JOBS})", value)
        return value
