"""Which files a run uses: fMRIPrep's BIDS filter file (``--bids-filter-file``) and session labels.

fMRIPrep's format is a JSON object of queries, one per kind of file, each mapping
BIDS entities to values::

    {"bold": {"session": ["scs", "dual"], "run": 1, "acquisition": null},
     "t1w": {"session": "scs"}}

A value is a label (or an integer for ``run``, ``echo`` and ``chunk``), a list of
them (any of), ``null`` (the file must not have the entity) or ``"*"`` (it must
have it, with any value); labels match exactly, as pybids matches them (no regular
expressions). fmri-pain reads BOLD runs and one T1w per subject, so the ``bold``
and ``t1w`` queries select files; the queries of files it never reads (``fmap``,
``sbref``, ``t2w`` ...) are accepted for compatibility with fMRIPrep's filter
files and reported as ignored (:attr:`RunSelection.ignored`). Any other key, an
unknown entity or a value of the wrong type is an :class:`~fmri_pain.errors.InputError`
naming the file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fmri_pain.errors import InputError

#: Entities a BOLD or T1w file name may carry (BIDS 1.9), in pybids' spelling.
ENTITIES = ("subject", "session", "task", "acquisition", "ceagent", "reconstruction",
            "direction", "run", "echo", "part", "chunk")
_INTEGER_ENTITIES = frozenset({"run", "echo", "chunk"})
#: Queries of fMRIPrep's filter files that select files fmri-pain never reads.
NOT_READ = ("fmap", "sbref", "t2w", "flair", "roi", "pet", "asl", "dwi")
_APPLIED = ("bold", "t1w")


class _Any:
    """``"*"``: the entity is present, whatever its value."""

    def __repr__(self) -> str:
        return '"*"'


ANY = _Any()


@dataclass(frozen=True)
class FileQuery:
    """Entity -> allowed values; a value ``None`` means the entity must be absent.

    Attributes
    ----------
    entities : mapping of str to tuple
        Allowed values per entity (labels as str, integer entities as int,
        :data:`ANY`, or ``None``).
    """

    entities: Mapping[str, tuple[Any, ...]]

    def matches(self, ents: Mapping[str, Any]) -> bool:
        """Whether a file with entities ``ents`` (pybids' ``get_entities``) is selected."""
        for name, allowed in self.entities.items():
            value = ents.get(name)
            if not any(_match(value, want, name) for want in allowed):
                return False
        return True

    def describe(self) -> str:
        """The query as JSON-like text, for messages."""
        parts = []
        for name, allowed in self.entities.items():
            texts = ["null" if a is None else repr(a) if a is ANY else json.dumps(a) for a in allowed]
            parts.append(f"{name}={texts[0] if len(texts) == 1 else '[' + ', '.join(texts) + ']'}")
        return ", ".join(parts)


def _match(value: Any, want: Any, name: str) -> bool:
    if want is None:
        return value is None
    if value is None:
        return False
    if want is ANY:
        return True
    if name in _INTEGER_ENTITIES:
        try:
            return int(value) == want
        except (TypeError, ValueError):
            return False
    return str(value) == want


@dataclass(frozen=True)
class RunSelection:
    """The files a run of the pipeline may use (default: all).

    Attributes
    ----------
    bold, t1w : FileQuery, optional
        The filter file's ``bold`` and ``t1w`` queries.
    sessions : tuple of str, optional
        Session labels (without ``ses-``) to analyse; None: every session.
    source : path, optional
        The filter file, for messages.
    ignored : tuple of str
        Queries of the filter file that select no file fmri-pain reads.
    """

    bold: FileQuery | None = None
    t1w: FileQuery | None = None
    sessions: tuple[str, ...] | None = None
    source: Path | None = None
    ignored: tuple[str, ...] = field(default_factory=tuple)

    @property
    def active(self) -> bool:
        """Whether anything is filtered out at all."""
        return self.bold is not None or self.t1w is not None or self.sessions is not None

    def keeps_bold(self, ents: Mapping[str, Any]) -> bool:
        """Whether a BOLD file with entities ``ents`` is analysed."""
        if self.sessions is not None and ents.get("session") not in self.sessions:
            return False
        return self.bold is None or self.bold.matches(ents)

    def keeps_t1w(self, ents: Mapping[str, Any]) -> bool:
        """Whether a T1w file with entities ``ents`` may be the subject's anatomical image."""
        return self.t1w is None or self.t1w.matches(ents)

    def describe(self) -> str:
        """What is selected, in one line (for messages and logs)."""
        parts = []
        if self.sessions is not None:
            parts.append("sessions " + ", ".join(self.sessions))
        for kind in _APPLIED:
            query = getattr(self, kind)
            if query is not None:
                parts.append(f"{kind} {{{query.describe()}}}" + (f" ({self.source})" if self.source else ""))
        return "; ".join(parts) or "every run"

    def with_sessions(self, labels: Iterable[str] | None) -> RunSelection:
        """This selection restricted to the session ``labels`` (with or without ``ses-``)."""
        if labels is None:
            return self
        return RunSelection(bold=self.bold, t1w=self.t1w, sessions=session_labels(labels),
                            source=self.source, ignored=self.ignored)


def session_labels(labels: Iterable[str] | str) -> tuple[str, ...]:
    """Session labels without ``ses-``, validated (alphanumeric) and deduplicated.

    Raises
    ------
    InputError
        For a label that is not alphanumeric once the prefix is stripped.
    """
    if isinstance(labels, str):
        labels = [labels]
    out: list[str] = []
    for raw in labels:
        text = str(raw).strip()
        label = text[4:] if text.startswith("ses-") else text
        if not label.isascii() or not label.isalnum():
            raise InputError(f"session label {raw!r} is not alphanumeric (give e.g. scs or ses-scs)")
        if label not in out:
            out.append(label)
    return tuple(out)


def parse_bids_filters(data: Any, source: Path | str | None = None) -> RunSelection:
    """A :class:`RunSelection` from the decoded JSON of a BIDS filter file.

    Raises
    ------
    InputError
        Naming ``source``: not an object, an unknown query or entity, a bad value.
    """
    path = Path(source) if source is not None else None

    def fail(message: str) -> InputError:
        return InputError(f"BIDS filter file: {message}", path=path)

    if not isinstance(data, dict):
        raise fail(f"expected a JSON object of queries (e.g. {{\"bold\": {{\"session\": \"scs\"}}}}), "
                   f"got {type(data).__name__}")
    queries: dict[str, FileQuery] = {}
    ignored = []
    for kind, query in data.items():
        if kind in NOT_READ:
            ignored.append(kind)
            continue
        if kind not in _APPLIED:
            raise fail(f"unknown query {kind!r}; fmri-pain applies {', '.join(map(repr, _APPLIED))} "
                       f"and ignores {', '.join(NOT_READ)}")
        if not isinstance(query, dict):
            raise fail(f"query {kind!r} must be an object of entities, got {type(query).__name__}")
        queries[kind] = FileQuery(_entities(kind, query, fail))
    return RunSelection(bold=queries.get("bold"), t1w=queries.get("t1w"), source=path,
                        ignored=tuple(ignored))


def _entities(kind: str, query: dict, fail) -> dict[str, tuple[Any, ...]]:
    out: dict[str, tuple[Any, ...]] = {}
    for name, value in query.items():
        if name in ("datatype", "suffix", "extension"):
            raise fail(f"query {kind!r}: {name!r} is fixed by the query itself; give entities only "
                       f"({', '.join(ENTITIES)})")
        if name not in ENTITIES:
            raise fail(f"query {kind!r}: unknown entity {name!r}; known: {', '.join(ENTITIES)}")
        values = value if isinstance(value, list) else [value]
        if not values:
            raise fail(f"query {kind!r}: entity {name!r} has an empty list (nothing would match)")
        out[name] = tuple(_value(kind, name, v, fail) for v in values)
    return out


def _value(kind: str, name: str, value: Any, fail) -> Any:
    if value is None:
        return None
    if value == "*":
        return ANY
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise fail(f"query {kind!r}: entity {name!r} has value {json.dumps(value)}; give a label, "
                   "a list of labels, null or \"*\"")
    if name in _INTEGER_ENTITIES:
        try:
            return int(value)
        except ValueError:
            raise fail(f"query {kind!r}: entity {name!r} takes integers, got {json.dumps(value)}") from None
    text = str(value)
    if not text.isascii() or not text.isalnum():
        prefix = f"{name[:3]}-" if name in ("subject", "session") else ""
        hint = f" (give the label without {prefix!r})" if prefix and text.startswith(prefix) else ""
        raise fail(f"query {kind!r}: entity {name!r} value {text!r} is not an alphanumeric label{hint}")
    return text


def read_bids_filter_file(path: Path | str) -> RunSelection:
    """Read and check a BIDS filter file (fMRIPrep's ``--bids-filter-file`` format).

    Raises
    ------
    InputError
        One line naming the file: missing, unreadable, not JSON, or not a valid filter.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("BIDS filter file does not exist", path=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"BIDS filter file cannot be read: {getattr(exc, 'strerror', None) or exc}",
                         path=path) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"BIDS filter file is not valid JSON: {exc.msg} (line {exc.lineno}, "
                         f"column {exc.colno})", path=path) from None
    return parse_bids_filters(data, path)


def run_selection(filter_file: Path | str | None = None,
                  sessions: Iterable[str] | None = None) -> RunSelection:
    """The selection of ``--bids-filter-file`` and ``--session-label`` (either may be None)."""
    selection = read_bids_filter_file(filter_file) if filter_file is not None else RunSelection()
    return selection.with_sessions(sessions)


def left_out_session_outputs(output_dir: Path | str, runs: Iterable[Any]) -> list[Path]:
    """Session folders of OUTPUT_DIR holding maps of sessions the runs do not include.

    After a run with a wider selection, the maps made from the sessions now left
    out stay on disk (nothing removes outputs), and so do the subject-level maps
    combining them, which the group level reads: the caller warns.

    Parameters
    ----------
    output_dir : path
    runs : iterable of Run
        The selected runs (``subject`` and ``session`` are read).
    """
    runs = list(runs)
    kept = {(r.subject, r.session) for r in runs}
    found = []
    for subject in sorted({r.subject for r in runs}):
        for folder in sorted(Path(output_dir, f"sub-{subject}").glob("ses-*")):
            if (subject, folder.name[4:]) not in kept and next(folder.rglob("*_statmap.nii.gz"), None):
                found.append(folder)
    return found
