"""The ``responders`` section: who responded to a therapy, from thresholds on sessions.tsv columns.

A rule is a threshold on one numeric column of ``sessions.tsv``; the rules are
combined with ``all`` (every rule passes) or ``any``. Nothing here is evaluated as
code: a rule is a column name and a number. The two definitions of the
neuropathic-pain trial literature (IMMPACT, Dworkin et al. 2008, J Pain 9:105):

```yaml
responders:            # >= 50 % pain relief
  rules:
    - {column: pain_relief, at_least: 50}
```

```yaml
responders:            # >= 30 % relief and a VAS reduction of >= 20 mm
  combine: all
  rules:
    - {column: pain_relief, at_least: 30}
    - {column: vas_reduction_mm, at_least: 20}
```

The second needs a VAS reduction column (baseline VAS minus the session's VAS, in
mm); the simulator's ``sessions.tsv`` has ``pain_relief`` (%) and ``vas_pain``
(0-10) only, and a rule naming a column the data lack stops the responder analysis
with a recorded reason (``desc-skipped_table.tsv``), never silently.
"""

from __future__ import annotations

import re
from dataclasses import field
from typing import Literal

import pydantic
from pydantic import StrictBool, StrictFloat, StrictInt, StrictStr

from fmri_pain.config.fields import bounded, spec_dataclass

COLUMN_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
"""A sessions.tsv column name a rule may name (a plain identifier)."""


@spec_dataclass
class ResponderRule:
    """One threshold on a sessions.tsv column: ``column >= at_least`` and/or ``column <= at_most``."""

    column: StrictStr
    """Numeric column of sessions.tsv (e.g. ``pain_relief``)."""
    at_least: StrictFloat | None = None
    """The session passes when the column is at least this value."""
    at_most: StrictFloat | None = None
    """The session passes when the column is at most this value."""

    def describe(self) -> str:
        """E.g. ``pain_relief >= 50``."""
        parts = []
        if self.at_least is not None:
            parts.append(f"{self.column} >= {self.at_least:g}")
        if self.at_most is not None:
            parts.append(f"{self.column} <= {self.at_most:g}")
        return " and ".join(parts)


@spec_dataclass
class RespondersSpec:
    """Responder analysis: responder status from pain outcomes, node effects and maps by status, prediction."""

    enabled: StrictBool | None = None
    """Run the responder analysis at the group level; null: when ``rules`` are given."""
    rules: tuple[ResponderRule, ...] = field(default_factory=tuple)
    """Thresholds on numeric sessions.tsv columns, each a mapping ``{column: NAME, at_least: X}``
    and/or ``at_most: X`` (a number, never an expression). The literature's two definitions:
    ``[{column: pain_relief, at_least: 50}]`` (>= 50 % pain relief) and, with ``combine: all``,
    ``[{column: pain_relief, at_least: 30}, {column: vas_reduction_mm, at_least: 20}]`` (>= 30 %
    relief and >= 20 mm VAS reduction), which needs a VAS-reduction column (baseline minus session,
    mm): a rule naming a column the sessions lack skips the analysis with a recorded reason."""
    combine: Literal["all", "any"] = "all"
    """A session responds when ``all`` its rules pass, or ``any`` of them."""
    conditions: tuple[StrictStr, ...] = field(default_factory=tuple)
    """Conditions whose sessions define responders and are analysed (empty: every condition)."""
    map_permutations: StrictInt = bounded(1000, 0, 1_000_000)
    """Permutations (whole subjects between the groups) of the responder-vs-non-responder maps
    (0: parametric maps only); all distinct relabellings when there are no more."""

    @pydantic.model_validator(mode="after")
    def _check_rules(self) -> RespondersSpec:
        for i, rule in enumerate(self.rules):
            key = f"responders.rules[{i}]"
            if not COLUMN_RE.fullmatch(rule.column):
                raise ValueError(f"{key}.column = {rule.column!r} must be a column name (letters, "
                                 "digits, _)")
            if rule.at_least is None and rule.at_most is None:
                raise ValueError(f"{key} (column {rule.column}) needs at_least or at_most")
            if rule.at_least is not None and rule.at_most is not None and rule.at_least > rule.at_most:
                raise ValueError(f"{key} (column {rule.column}) has at_least {rule.at_least:g} > "
                                 f"at_most {rule.at_most:g}: no session can pass")
        if self.enabled and not self.rules:
            raise ValueError("responders.enabled is true but responders.rules is empty: give at least "
                             "one rule, e.g. {column: pain_relief, at_least: 50}")
        if len(set(c.lower() for c in self.conditions)) != len(self.conditions):
            raise ValueError(f"responders.conditions {list(self.conditions)} repeat a condition")
        return self

    @property
    def active(self) -> bool:
        """Whether the analysis runs (``enabled``, or rules given when ``enabled`` is null)."""
        return bool(self.rules) if self.enabled is None else self.enabled

    def describe(self) -> str:
        """The definition in words, e.g. ``pain_relief >= 50``."""
        return f" {'and' if self.combine == 'all' else 'or'} ".join(r.describe() for r in self.rules)
