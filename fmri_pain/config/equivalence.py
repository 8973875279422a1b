"""The ``equivalence`` section: non-inferiority, superiority and equivalence tests against a margin.

Each test names a t contrast of the trial (``drgsMinusScs``: estimate ``D`` = DRGS - SCS,
positive when the first condition's response is higher), a kind and a margin ``m``:

- ``non-inferiority``: H0 ``D <= -m``, one-sided test of ``D + m > 0``;
- ``superiority``: H0 ``D <= m`` (``m`` may be 0), one-sided test of ``D - m > 0``;
- ``equivalence``: two one-sided tests (TOST), H0 ``|D| >= m``; ``p = max`` of the tests of
  ``D + m > 0`` and ``D - m < 0``.

Every test is run at level ``alpha`` and drawn with the two-sided ``1 - 2 alpha`` confidence
interval (90 % at alpha 0.05; CONSORT's convention for non-inferiority trials: its lower bound is
the one-sided ``1 - alpha`` bound, so the test rejects exactly when the bound clears the margin).
"""

from __future__ import annotations

from dataclasses import field
from typing import Literal

from pydantic import StrictBool, StrictFloat, StrictStr

from fmri_pain.config.fields import SpecError, bounded, shown, spec_dataclass
from fmri_pain.trial import trial_contrasts

KINDS = ("non-inferiority", "superiority", "equivalence")
"""The kinds of test, in the order of the module docstring."""


@spec_dataclass
class EquivalenceTest:
    """One test of a condition contrast against a margin."""

    contrast: StrictStr = "drgsMinusScs"
    """A t contrast of the trial (``trial.trial_contrasts`` of the spec's conditions), e.g.
    ``drgsMinusScs``, ``dualMinusScs``, ``dualMinusMean``."""
    kind: Literal["non-inferiority", "superiority", "equivalence"] = "non-inferiority"
    """``non-inferiority``: H0 D <= -margin; ``superiority``: H0 D <= margin; ``equivalence``:
    H0 abs(D) >= margin (two one-sided tests, p = the larger of the two)."""
    margin: StrictFloat = bounded(0.1, 0, 1000)
    """The margin, > 0 (0 is allowed for superiority only: D > 0), in ``unit``."""
    unit: Literal["psc", "dz"] = "psc"
    """``psc``: percent signal change, the unit of the node effects and subject maps; ``dz``: the
    standardised within-subject effect, margin x the within-subject SD of the contrast (estimated
    from the crossover model; see docs of ``fmri_pain.pathways.equivalence``). Voxelwise maps
    (``equivalence.maps``) take ``psc`` only."""


@spec_dataclass
class EquivalenceSpec:
    """Non-inferiority, superiority and equivalence (TOST) tests of condition contrasts."""

    tests: tuple[EquivalenceTest, ...] = field(default_factory=tuple)
    """The tests, each a mapping ``{contrast, kind, margin, unit}`` (keys in section
    ``equivalence.tests[]``); one test per contrast and kind. Empty: none run."""
    alpha: StrictFloat = bounded(0.05, 0, 0.5, lo_open=True, hi_open=True)
    """Level of every one-sided test; confidence intervals are drawn at 1 - 2 alpha."""
    maps: StrictBool = True
    """Also run the voxelwise tests (permutation, max-t FWE) on the group's paired difference
    maps (one-sample maps for a condition's own contrast)."""


def check_equivalence(section: EquivalenceSpec, conditions: tuple[str, ...], source: str) -> None:
    """Rules of the section that involve the trial's conditions.

    Raises
    ------
    SpecError
        Naming the key: a contrast that is not a t contrast of ``conditions``, a margin of 0
        outside superiority, a ``dz`` test with ``maps: true``, a contrast and kind given twice.
    """
    contrasts = trial_contrasts(tuple(conditions))
    t_names = [name for name, c in contrasts.items() if c.stat_type == "t"]
    seen: set[tuple[str, str]] = set()
    for i, test in enumerate(section.tests):
        key = f"equivalence.tests[{i}]"
        if test.contrast not in t_names:
            raise SpecError(f"{source}: {key}.contrast = {shown(test.contrast)} is not a t contrast of "
                            f"the trial's conditions ({', '.join(t_names)})")
        if test.margin <= 0 and test.kind != "superiority":
            raise SpecError(f"{source}: {key}.margin = {shown(test.margin)} must be > 0 for a "
                            f"{test.kind} test (0 is allowed for superiority only)")
        if test.unit == "dz" and section.maps:
            raise SpecError(f"{source}: {key}.unit = 'dz' cannot be mapped voxelwise "
                            "(equivalence.maps: true): a per-voxel SD plugged into the margin is "
                            "not a permutation test of a fixed margin; use unit: psc or maps: false")
        if (test.contrast, test.kind) in seen:
            raise SpecError(f"{source}: {key}: contrast {test.contrast} has two {test.kind} tests; "
                            "keep one")
        seen.add((test.contrast, test.kind))
