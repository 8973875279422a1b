"""Reading a failed participant task: worth a retry or not, its one-line error, the file at fault."""

from __future__ import annotations

import contextlib
import errno
import json
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from fmri_pain.bids.layout import Run
from fmri_pain.config.fields import SpecError
from fmri_pain.errors import InputError
from fmri_pain.execution.resume import INPUT_ROLES

# errno values of an OSError that a retry cannot cure.
_DETERMINISTIC_ERRNOS = frozenset(
    getattr(errno, name) for name in ("ENOENT", "EACCES", "EPERM", "EISDIR", "ENOTDIR", "ENOSPC",
                                      "EDQUOT", "EROFS", "ENAMETOOLONG", "ELOOP", "EEXIST",
                                      "EINVAL", "EFBIG", "ENOTEMPTY")
    if hasattr(errno, name))


def _parse_errors() -> tuple[type[BaseException], ...]:
    import gzip
    import zlib

    errors: list[type[BaseException]] = [EOFError, gzip.BadGzipFile, zlib.error,
                                          json.JSONDecodeError, UnicodeDecodeError]
    with contextlib.suppress(ImportError):
        from nibabel.filebasedimages import ImageFileError
        from nibabel.spatialimages import HeaderDataError

        errors += [ImageFileError, HeaderDataError]
    with contextlib.suppress(ImportError):
        errors += [pd.errors.ParserError, pd.errors.EmptyDataError]
    return tuple(errors)


_PARSE_ERRORS = _parse_errors()


def is_infrastructure_failure(exc: BaseException) -> bool:
    """Whether a failed participant task is worth retrying.

    Retried: ``MemoryError`` (the worker may have shared its memory with other
    tasks), ``TimeoutError``/``ConnectionError`` and other ``OSError`` with a
    transient errno (``EIO``, ``ESTALE``, ``EAGAIN``, ``EBUSY`` ...: file-system
    and network hiccups). A killed worker or a lost connection never gets here:
    the dask future fails and :func:`fmri_pain.execution.runner.run_participants`
    retries it.

    Not retried, because the same code on the same input fails the same way:
    :class:`~fmri_pain.errors.InputError`, :class:`~fmri_pain.config.fields.SpecError`,
    files that cannot be parsed, ``OSError`` with ``ENOENT``, ``EACCES``,
    ``ENOSPC``, ``EROFS`` ... and every other exception (``ValueError``,
    ``RuntimeError``, ``KeyError`` ...).
    """
    if isinstance(exc, (InputError, SpecError)) or isinstance(exc, _PARSE_ERRORS):
        return False
    if isinstance(exc, MemoryError):
        return True
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    if isinstance(exc, OSError):
        return exc.errno not in _DETERMINISTIC_ERRNOS
    return False


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message``."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def path_from_exception(exc: BaseException) -> str | None:
    """The ``path``/``filename`` an exception (or its cause) carries, if any."""
    for candidate in (getattr(exc, "path", None), getattr(exc, "filename", None)):
        if candidate:
            return str(candidate)
    cause = exc.__cause__ or exc.__context__
    if cause is not None and cause is not exc:
        return path_from_exception(cause)
    return None


def mentioned_input(text: str, runs: Sequence[Run]) -> str | None:
    """The first input file of ``runs`` whose path (or name) appears in a traceback."""
    candidates = [Path(p) for run in runs for p in (getattr(run, r) for r in INPUT_ROLES) if p]
    for path in candidates:
        if str(path) in text:
            return str(path)
    for path in candidates:
        if path.name in text:
            return str(path)
    return None


_PATH_RE = re.compile(r"""(/[^\s'"`]+?\.(?:nii\.gz|nii|tsv|json|gz|mat|txt|npy))(?=$|[\s'"`:,;)])""")


_QUOTED_PATH_RE = re.compile(r"""["'](/[^"']+?\.(?:nii\.gz|nii|tsv|json|gz|mat|txt|npy))["']""")


def path_in_message(message: str) -> str | None:
    """The first absolute data-file path written in an error message."""
    match = _QUOTED_PATH_RE.search(message) or _PATH_RE.search(message)
    return match.group(1) if match else None
