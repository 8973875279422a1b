"""Errors that name the subject and the file at fault."""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad input data: never retried, reported with its subject and file.

    Parameters
    ----------
    message : str
        What is wrong.
    subject : str, optional
        Subject label without ``sub-``.
    path : path, optional
        The file at fault.
    """

    def __init__(self, message: str, *, subject: str | None = None,
                 path: Path | str | None = None) -> None:
        self.subject = subject
        self.path = Path(path) if path is not None else None
        self.reason = message
        where = []
        if subject is not None:
            where.append(f"sub-{subject}")
        if path is not None:
            where.append(str(path))
        super().__init__(f"{': '.join(where)}: {message}" if where else message)


class LayoutErrors(InputError):
    """Several input problems found while validating a dataset."""

    def __init__(self, errors: list[InputError]) -> None:
        self.errors = list(errors)
        lines = "\n".join(f"  - {e}" for e in self.errors)
        ValueError.__init__(self, f"{len(self.errors)} input problem(s):\n{lines}")
        self.subject = None
        self.path = None
        self.reason = str(self)
