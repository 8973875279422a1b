"""The ``events`` section: which trial types mean what in ``events.tsv``."""

from __future__ import annotations

from pydantic import StrictStr

from fmri_pain.config.fields import spec_dataclass


@spec_dataclass
class EventsSpec:
    """Which trial types mean what in ``events.tsv``."""

    on_trial_type: StrictStr = "on"
    """trial_type of stimulator-ON blocks; the ``stim`` contrast is ON > baseline. Read by every
    stage (first level, layout validation, pathway connectivity, methods text). Deprecated
    aliases: ``events.on``, ``pathways.on_trial_type``."""
    off_trial_type: StrictStr | None = None
    """trial_type of explicit OFF blocks; if set, ``stim`` is ON > OFF. Deprecated alias: ``events.off``."""
