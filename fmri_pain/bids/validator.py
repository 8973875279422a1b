"""The community's BIDS validator (bids-standard/bids-validator, schema-based) run on a dataset.

The validator is the ``bids-validator-deno`` package of PyPI, a dependency of
fmri-pain: a JavaScript bundle run by the Deno runtime of the ``deno`` package,
with the BIDS schema bundled, so it needs no network. It is run as a
subprocess (an argument list, never a shell string, with a timeout) with
``--format json``; its report is parsed into :class:`ValidatorIssue` records,
one per kind of problem with the files it concerns.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

from fmri_pain.errors import InputError

EXECUTABLE = "bids-validator-deno"
"""The validator's command (console script of the ``bids-validator-deno`` package)."""

TIMEOUT_S = 900.0
"""Seconds the validator may take (a few seconds for tens of subjects here)."""

_EXIT_VALID, _EXIT_INVALID = 0, 16  # the validator's exit codes with a report written
_HOW_TO_FIX = ("install it with `pip install bids-validator-deno` (a dependency of fmri-pain) "
               "or pass --skip-bids-validation")


class ValidatorUnavailable(InputError):
    """The validator could not be run, or gave no report (missing, crashed, timed out)."""


@dataclass(frozen=True)
class ValidatorIssue:
    """One kind of problem the validator found, with the files it concerns.

    Attributes
    ----------
    severity : str
        ``"error"`` or ``"warning"``.
    code : str
        The validator's code, e.g. ``SIDECAR_KEY_REQUIRED``.
    key : str or None
        Its sub-code: the field concerned (``RepetitionTime``), when it names one.
    message : str
        What the code means (the validator's own text), with the detail it gave.
    files : tuple of str
        Paths relative to the dataset root (``sub-01/.../x_bold.nii.gz``); empty
        for a problem of the dataset as a whole.
    """

    severity: str
    code: str
    key: str | None
    message: str
    files: tuple[str, ...]

    def what(self) -> str:
        """Code, key and message, without the files: ``SIDECAR_KEY_REQUIRED (RepetitionTime): ...``."""
        name = f"{self.code} ({self.key})" if self.key else self.code
        return f"{name}: {self.message}"

    def line(self, max_files: int = 3) -> str:
        """One line: code, key, message and the first ``max_files`` files."""
        shown = ", ".join(self.files[:max_files]) or "the dataset"
        more = len(self.files) - max_files
        return f"{self.what()}: {shown}" + (f" and {more} more file(s)" if more > 0 else "")


@dataclass(frozen=True)
class ValidationReport:
    """What the validator said about one dataset.

    Attributes
    ----------
    dataset : Path
    issues : tuple of ValidatorIssue
        Errors first, then warnings, each in the validator's order.
    version : str
        The ``bids-validator-deno`` package version.
    schema_version : str or None
        The version of the BIDS schema it validated against.
    """

    dataset: Path
    issues: tuple[ValidatorIssue, ...]
    version: str
    schema_version: str | None = None

    @property
    def errors(self) -> list[ValidatorIssue]:
        """Issues of severity ``error``."""
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[ValidatorIssue]:
        """Issues of severity ``warning``."""
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def valid(self) -> bool:
        """No errors (warnings allowed)."""
        return not self.errors

    def describe(self) -> str:
        """``bids-validator-deno 3.0.2, schema 1.2.7``."""
        schema = f", schema {self.schema_version}" if self.schema_version else ""
        return f"{EXECUTABLE} {self.version}{schema}"

    def for_subjects(self, labels: Iterable[str] | None) -> ValidationReport:
        """The report restricted to the subjects analysed (labels with or without ``sub-``).

        As fMRIPrep validates only the selected participants: files of other
        subjects are dropped from each issue, and an issue left with no file is
        dropped; issues of files outside ``sub-*`` folders (or of no file) stay.
        """
        if labels is None:
            return self
        keep = {str(label).removeprefix("sub-") for label in labels}

        def selected(path: str) -> bool:
            top = path.split("/", 1)[0]
            return not top.startswith("sub-") or top.removeprefix("sub-") in keep

        issues = []
        for issue in self.issues:
            files = tuple(f for f in issue.files if selected(f))
            if files or not issue.files:
                issues.append(replace(issue, files=files))
        return replace(self, issues=tuple(issues))

    def split_errors(self) -> tuple[list[ValidatorIssue], dict[str, list[ValidatorIssue]]]:
        """The errors of the dataset as a whole, and those of each subject's own files.

        A file under a ``sub-<label>/`` folder is that subject's; every other file
        (``dataset_description.json``, ``participants.tsv``, a task sidecar at the
        root ...) and an error naming no file concern the whole dataset. An error
        whose files are of both kinds is split accordingly.

        Returns
        -------
        dataset : list of ValidatorIssue
            Errors of top-level files or of no file (nothing can be trusted then).
        subjects : dict of str to list of ValidatorIssue
            Subject label (without ``sub-``) -> its errors, each naming only its files.
        """
        dataset: list[ValidatorIssue] = []
        subjects: dict[str, list[ValidatorIssue]] = {}
        for issue in self.errors:
            own: dict[str, list[str]] = {}
            shared = []
            for path in issue.files:
                label = subject_of(path)
                if label is None:
                    shared.append(path)
                else:
                    own.setdefault(label, []).append(path)
            if shared or not issue.files:
                dataset.append(replace(issue, files=tuple(shared)))
            for label, files in own.items():
                subjects.setdefault(label, []).append(replace(issue, files=tuple(files)))
        return dataset, dict(sorted(subjects.items()))

    def lines(self, severity: str = "error", limit: int = 20) -> list[str]:
        """One line per issue of ``severity``, at most ``limit`` (the last says how many are left)."""
        issues = [i for i in self.issues if i.severity == severity]
        out = [i.line() for i in issues[:limit]]
        if len(issues) > limit:
            out.append(f"... and {len(issues) - limit} more kind(s) of {severity}; run "
                       f"`{EXECUTABLE} {self.dataset}` for all of them")
        return out


def subject_of(path: str) -> str | None:
    """The subject label of a dataset-relative path under ``sub-<label>/``, else None."""
    top, sep, _ = path.lstrip("/").partition("/")
    label = top.removeprefix("sub-")
    return label if sep and top.startswith("sub-") and label else None


def subject_input_errors(report: ValidationReport | None) -> dict[str, list[InputError]]:
    """The validator's errors of each subject's own files, as input errors naming subject and file.

    One :class:`~fmri_pain.errors.InputError` per error and file (absolute path),
    in the report's order; errors of top-level files are not included (see
    :meth:`ValidationReport.split_errors`).
    """
    if report is None:
        return {}
    _, by_subject = report.split_errors()
    return {label: [InputError(f"BIDS validator: {issue.what()}",
                               subject=label, path=report.dataset / path)
                    for issue in issues for path in issue.files]
            for label, issues in by_subject.items()}


def validator_version() -> str:
    """The installed ``bids-validator-deno`` version (``unknown`` when not installed as a package).

    The validator's own ``--version`` reports the git commit of the folder it sits in, not its release.
    """
    try:
        return metadata.version(EXECUTABLE)
    except metadata.PackageNotFoundError:
        return "unknown"


def find_validator() -> Path:
    """The validator's executable: on ``PATH``, else beside this Python (an unactivated venv).

    Raises
    ------
    ValidatorUnavailable
        When neither has it, saying how to install it or to skip validation.
    """
    found = shutil.which(EXECUTABLE)
    if found:
        return Path(found)
    beside = Path(sys.executable).parent / EXECUTABLE
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    raise ValidatorUnavailable(f"the BIDS validator ({EXECUTABLE}) is not installed: {_HOW_TO_FIX}")


def _first_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def _first_sentence(text: str | None) -> str:
    """The first sentence of a (possibly wrapped, multi-sentence) text, on one line, without its full stop."""
    flat = " ".join((text or "").split())
    return flat.split(". ", 1)[0].rstrip(".")


def _files(entry: Mapping[str, Any]) -> list[str]:
    places = [entry.get("location"), *(entry.get("affects") or [])]
    return [str(p).lstrip("/") for p in places if p]


def parse_report(payload: Mapping[str, Any], dataset: Path | str,
                 version: str | None = None) -> ValidationReport:
    """The validator's JSON report (``--format json``) as a :class:`ValidationReport`.

    Issues are grouped by severity, code, sub-code and detail (the first line of
    the validator's ``issueMessage``, unless that is only the schema's description
    of the field the sub-code names), each group listing its files once.
    """
    dataset = Path(dataset)
    block = payload.get("issues") or {}
    if not isinstance(block, Mapping) or not isinstance(block.get("issues", []), list):
        raise ValidatorUnavailable(f"{EXECUTABLE} wrote a report fmri-pain cannot read "
                                   "(no issue list)", path=dataset)
    meanings = block.get("codeMessages") or {}
    groups: dict[tuple[str, str, str | None, str], list[str]] = {}
    for entry in block.get("issues", []):
        if not isinstance(entry, Mapping):
            continue
        severity = str(entry.get("severity", "error"))
        if severity not in ("error", "warning"):
            continue  # "ignore": the validator's own decision not to report
        detail = _first_line(entry.get("issueMessage"))
        if detail.startswith("Field description:"):
            detail = ""
        key = (severity, str(entry.get("code", "UNKNOWN")), entry.get("subCode"), detail)
        files = groups.setdefault(key, [])
        files.extend(f for f in _files(entry) if f not in files)
    issues = []
    for (severity, code, sub_code, detail), files in groups.items():
        meaning = _first_sentence(meanings.get(code)) or code
        message = f"{meaning} ({detail})" if detail else meaning
        issues.append(ValidatorIssue(severity, code, None if sub_code is None else str(sub_code),
                                     message, tuple(sorted(files))))
    issues.sort(key=lambda i: i.severity != "error")  # stable: the validator's order within each
    summary = payload.get("summary") or {}
    schema = summary.get("schemaVersion") if isinstance(summary, Mapping) else None
    return ValidationReport(dataset, tuple(issues), version or validator_version(),
                            None if schema is None else str(schema))


def run_validator(bids_dir: Path | str, *, timeout: float = TIMEOUT_S,
                  executable: Path | str | None = None) -> ValidationReport:
    """Run the official BIDS validator on ``bids_dir`` and parse its report.

    Parameters
    ----------
    bids_dir : path
        The raw dataset's root folder.
    timeout : float
        Seconds before the validator is stopped.
    executable : path, optional
        The validator to run (default: :func:`find_validator`).

    Returns
    -------
    ValidationReport

    Raises
    ------
    InputError
        ``bids_dir`` is not a folder.
    ValidatorUnavailable
        The validator is missing, timed out, or exited without a report.
    """
    bids_dir = Path(bids_dir)
    if not bids_dir.is_dir():
        raise InputError("the BIDS dataset is not a folder", path=bids_dir)
    command = [str(executable or find_validator()), "--format", "json", str(bids_dir)]
    # Measured here: no socket is opened on a local dataset; Deno's update check is turned off anyway.
    env = {**os.environ, "DENO_NO_UPDATE_CHECK": "1", "DENO_NO_PROMPT": "1", "NO_COLOR": "1"}
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env,
                              check=False, stdin=subprocess.DEVNULL)
    except FileNotFoundError as exc:
        raise ValidatorUnavailable(f"the BIDS validator cannot be started ({command[0]}): "
                                   f"{_HOW_TO_FIX}") from exc
    except subprocess.TimeoutExpired as exc:
        raise ValidatorUnavailable(f"the BIDS validator did not finish within {timeout:g} s: "
                                   "pass --skip-bids-validation, or run it yourself "
                                   f"(`{EXECUTABLE} {bids_dir}`)", path=bids_dir) from exc
    if proc.returncode not in (_EXIT_VALID, _EXIT_INVALID):
        raise ValidatorUnavailable(
            f"the BIDS validator failed (exit code {proc.returncode}): "
            f"{_first_line(proc.stderr) or _first_line(proc.stdout) or 'no message'}", path=bids_dir)
    try:
        payload = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise ValidatorUnavailable(f"the BIDS validator wrote no JSON report (exit code "
                                   f"{proc.returncode}): {_first_line(proc.stderr) or 'no message'}",
                                   path=bids_dir) from exc
    if not isinstance(payload, Mapping):
        raise ValidatorUnavailable("the BIDS validator's report is not a JSON object", path=bids_dir)
    return parse_report(payload, bids_dir)
