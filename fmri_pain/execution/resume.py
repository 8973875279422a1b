"""Resume: a subject's fingerprint, its record after success, and whether it is up to date.

After a subject succeeds, ``OUTPUT/logs/sub-XX_participant.json`` records a
fingerprint (sha256 of the subject's input files, the run records, the analysis
parameters and the package version) and the outputs. A re-run skips a subject
whose record matches and whose outputs all exist.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from fmri_pain._version import __version__
from fmri_pain.bids.derivatives import sha256_file, write_json
from fmri_pain.bids.layout import Run
from fmri_pain.config.execution import ExecutionSpec
from fmri_pain.errors import InputError

INPUT_ROLES = ("bold", "events", "mask", "confounds", "anat")


class SpecLike(Protocol):
    """What the execution layer reads of the analysis spec it hands to each task."""

    execution: ExecutionSpec

    def to_dict(self) -> dict[str, Any]:
        """The spec's parameters as plain data."""


def spec_parameters(spec: SpecLike) -> dict[str, Any]:
    """The spec's parameters that change what a subject computes."""
    # Where a subject runs does not change what it computes: leave `execution`
    # out, so switching --scheduler or worker counts does not invalidate a resume.
    params = spec.to_dict()
    params.pop("execution", None)
    return params


def subject_fingerprint(runs: Sequence[Run], spec: SpecLike) -> str:
    """sha256 over the subject's input files, run records, analysis parameters and version.

    Raises
    ------
    InputError
        If an input file of a run cannot be read.
    """
    records = []
    for run in sorted(runs, key=lambda r: (r.session or "", r.task, r.run or 0, str(r.bold))):
        files = {}
        for role in INPUT_ROLES:
            path = getattr(run, role)
            if path is None:
                continue
            try:
                files[role] = sha256_file(path)
            except OSError as exc:
                raise InputError(f"cannot read {role} file: {exc.strerror or exc}",
                                 subject=run.subject, path=path) from exc
        records.append({
            "entities": run.entities, "condition": run.condition, "period": run.period,
            "sequence": run.sequence, "metadata": run.metadata, "covariates": run.covariates,
            "files": files,
        })
    payload = {"runs": records, "parameters": spec_parameters(spec), "version": __version__}
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def record_path(output_dir: Path | str, subject: str) -> Path:
    """``OUTPUT/logs/sub-XX_participant.json``: the resume record of a subject."""
    return Path(output_dir) / "logs" / f"sub-{subject}_participant.json"


def write_record(output_dir: Path, subject: str, fingerprint: str, outputs: list[str],
                 duration_s: float, worker: str, attempt: int) -> None:
    """Record a subject's success: its fingerprint and outputs (relative to ``output_dir``)."""
    write_json({
        "subject": subject, "fingerprint": fingerprint, "outputs": outputs,
        "duration_s": round(duration_s, 3), "worker": worker, "attempt": attempt,
        "finished": datetime.datetime.now().isoformat(timespec="seconds"),
        "version": __version__,
    }, record_path(output_dir, subject))


def up_to_date_record(output_dir: Path, subject: str, fingerprint: str) -> dict | None:
    """The subject's record if it matches ``fingerprint`` and its outputs all exist, else None."""
    path = record_path(output_dir, subject)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if record.get("fingerprint") != fingerprint:
        return None
    outputs = [resolve_output(output_dir, p) for p in record.get("outputs", [])]
    if not all(p.exists() for p in outputs):
        return None
    return record


def resolve_output(output_dir: Path, path: str) -> Path:
    """An output path of a record: relative to ``output_dir`` unless absolute."""
    p = Path(path)
    return p if p.is_absolute() else output_dir / p


def relative_output(output_dir: Path, path: Path | str) -> str:
    """``path`` relative to ``output_dir`` when inside it, else absolute (for a record)."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(output_dir.resolve()))
    except ValueError:
        return str(p.resolve())
