"""The Run record: one functional run, the unit every stage consumes (no I/O, nothing heavy)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Run:
    """One functional run of one subject in one session: the unit every stage consumes.

    Attributes
    ----------
    subject : str
        Label without ``sub-``.
    session : str or None
        Label without ``ses-``; None for session-less datasets.
    condition : str
        Canonical condition (``SCS``/``DRGS``/``DUAL``); the task name in a
        one-condition study.
    period : int or None
        Treatment period (1-based), None if unknown.
    task : str
    run : int or None
    bold : Path
        Preprocessed MNI BOLD when derivatives are used, else the raw BOLD.
    events : Path or None
        ``events.tsv`` from the raw dataset.
    mask : Path or None
        Brain mask from the derivatives.
    confounds : Path or None
        Confounds TSV from the derivatives.
    metadata : dict
        Merged JSON sidecar (``RepetitionTime``, ``SliceTiming`` ...).
    sequence : str or None
        Treatment sequence, e.g. ``SCS-DRGS-DUAL``.
    anat : Path or None
        The subject's raw T1w, if any.
    covariates : dict
        sessions.tsv and participants.tsv columns for this run.
    """

    subject: str
    session: str | None
    condition: str
    period: int | None
    task: str
    run: int | None
    bold: Path
    events: Path | None
    mask: Path | None
    confounds: Path | None
    metadata: dict = field(default_factory=dict, hash=False, compare=False)
    sequence: str | None = None
    anat: Path | None = None
    covariates: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def tr(self) -> float:
        """Repetition time in seconds."""
        return float(self.metadata["RepetitionTime"])

    @property
    def entities(self) -> dict[str, Any]:
        """BIDS entities of the run, without empty ones."""
        ents = {"sub": self.subject, "ses": self.session, "task": self.task, "run": self.run}
        return {k: v for k, v in ents.items() if v is not None}

    @property
    def label(self) -> str:
        """Short human-readable identifier, e.g. ``sub-01 ses-scs run-1``."""
        return " ".join(f"{k}-{v}" for k, v in self.entities.items() if k != "task")


def subject_of(runs: Iterable[Run]) -> str:
    """The one subject label shared by ``runs``; ValueError when empty or mixed."""
    subjects = {r.subject for r in runs}
    if len(subjects) != 1:
        raise ValueError(f"expected the runs of one subject, got {sorted(subjects) or 'none'}")
    return subjects.pop()
