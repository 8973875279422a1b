"""What reaches the console from :mod:`logging`: one filter decides by verbosity and by whose logger it is.

Verbosity is the runner's scale (``fmri-pain ... -q`` 0, default 1, ``-v`` 2,
``-vv`` 3, ``-vvv`` 4):

* warnings and errors are always shown;
* INFO of this package (``fmri_pain.*``) from ``-v`` on;
* INFO of the libraries (dask, distributed, tornado, nipype, pybids, ...) from ``-vv`` on;
* DEBUG of everyone with ``-vvv``.

A warning repeated word for word (a pathway model refitted for every node, say)
reaches the console once below ``-vv``; Python warnings (``warnings.warn``) go
through logging too (``py.warnings``), so they are filtered the same way.

The filter acts on the console handler only: log files (the per-subject logs,
the workers' logs) keep their INFO lines whatever the verbosity.
"""

from __future__ import annotations

import logging
import sys

OWN = "fmri_pain"
"""The package's logger namespace."""

LIBRARY_CONSOLES = ("distributed", "nipype")
"""Libraries that attach console handlers of their own to their loggers."""

_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"


class ConsoleFilter(logging.Filter):
    """Pass a record to the console when ``verbosity`` asks for it (see the module docstring)."""

    def __init__(self, verbosity: int) -> None:
        super().__init__()
        self.verbosity = verbosity
        self._seen: set[tuple[str, str]] = set()
        self.repeats = 0
        """Repeated warnings kept off the console."""

    def filter(self, record: logging.LogRecord) -> bool:  # noqa: A003 -- logging's name
        if record.levelno >= logging.WARNING:
            if record.levelno >= logging.ERROR or self.verbosity >= 3:
                return True
            key = (record.name, record.getMessage())
            if key in self._seen:
                self.repeats += 1
                return False
            self._seen.add(key)
            return True
        if record.levelno < logging.INFO:
            return self.verbosity >= 4
        own = record.name == OWN or record.name.startswith(OWN + ".")
        return self.verbosity >= (2 if own else 3)


class ConsoleHandler(logging.Handler):
    """Write records to the current ``sys.stderr``, above any progress bar (through tqdm)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            # tqdm.write clears open bars, prints the line and redraws them.
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 -- a closed stream drops the record (raiseExceptions off)
            self.handleError(record)


def configure_console(verbosity: int) -> logging.Handler:
    """Route every log record to one filtered console handler on the root logger.

    Replaces the root logger's handlers, sets its level (INFO, DEBUG at
    ``verbosity >= 4``) so that log files keep their INFO lines, and silences
    the libraries' own console handlers (:func:`mute_library_consoles`).

    Returns
    -------
    logging.Handler
        The console handler installed.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = ConsoleHandler()
    handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
    handler.addFilter(ConsoleFilter(verbosity))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbosity >= 4 else logging.INFO)
    logging.captureWarnings(True)
    for noisy in ("matplotlib", "PIL", "numba", "asyncio", "fsspec"):
        # their DEBUG records cost time even when filtered out
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbosity >= 5 else logging.INFO)
    mute_library_consoles(verbosity)
    return handler


def mute_library_consoles(verbosity: int) -> None:
    """Filter the console handlers dask and nipype add to their own loggers.

    ``distributed`` adds a stderr handler (and stops propagation) when it is
    imported into a process whose root logger has none, as in a dask worker;
    ``nipype`` adds a stdout handler unless its logger already has one, so it is
    given a :class:`logging.NullHandler` first and its records propagate to the
    root's (filtered) handlers and to the per-subject log file. Safe to call
    more than once, in any process (the task wrapper calls it on workers).
    """
    nipype = logging.getLogger("nipype")
    if not nipype.handlers:
        nipype.addHandler(logging.NullHandler())
    for name in LIBRARY_CONSOLES:
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) in (
                    sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
                for old in [f for f in handler.filters if isinstance(f, ConsoleFilter)]:
                    handler.removeFilter(old)
                handler.addFilter(ConsoleFilter(verbosity))


def hidden_repeats() -> int:
    """Warnings kept off the console so far because they repeated an earlier one word for word."""
    return sum(f.repeats for h in logging.getLogger().handlers if isinstance(h, ConsoleHandler)
               for f in h.filters if isinstance(f, ConsoleFilter))
