"""The console filter: what each verbosity shows, repeated warnings once, the libraries' own handlers."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from fmri_pain.execution.console import ConsoleFilter, mute_library_consoles


def _record(name: str, level: int, message: str = "m") -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, None, None)


@pytest.mark.parametrize("verbosity, shown", [
    (0, {"own warning", "lib warning", "lib error"}),
    (1, {"own warning", "lib warning", "lib error"}),
    (2, {"own warning", "lib warning", "lib error", "own info"}),
    (3, {"own warning", "lib warning", "lib error", "own info", "lib info"}),
    (4, {"own warning", "lib warning", "lib error", "own info", "lib info", "own debug", "lib debug"}),
])
def test_each_verbosity_shows_its_records(verbosity, shown):
    records = {"own warning": ("fmri_pain.glm.second_level.fit", logging.WARNING),
               "own info": ("fmri_pain", logging.INFO),
               "own debug": ("fmri_pain.execution.runner", logging.DEBUG),
               "lib warning": ("distributed.nanny", logging.WARNING),
               "lib error": ("tornado.application", logging.ERROR),
               "lib info": ("distributed.scheduler", logging.INFO),
               "lib debug": ("nipype.workflow", logging.DEBUG)}
    console = ConsoleFilter(verbosity)
    passed = {what for what, (name, level) in records.items()
              if console.filter(_record(name, level, what))}
    assert passed == shown
    # a logger merely named like the package is not the package
    assert not ConsoleFilter(2).filter(_record("fmri_pain_extra", logging.INFO))


def test_repeated_warnings_reach_the_console_once():
    console = ConsoleFilter(1)
    same = [console.filter(_record("fmri_pain.pathways.stats", logging.WARNING, "ols instead"))
            for _ in range(5)]
    assert same == [True, False, False, False, False] and console.repeats == 4
    assert console.filter(_record("fmri_pain.pathways.stats", logging.WARNING, "other"))
    assert all(console.filter(_record("x", logging.ERROR, "boom")) for _ in range(2))
    assert all(ConsoleFilter(3).filter(_record("x", logging.WARNING, "w")) for _ in range(2))


def test_library_stream_handlers_are_filtered(capsys):
    log = logging.getLogger("distributed.test_console_probe")
    handler = logging.StreamHandler(sys.stderr)  # as distributed adds on a worker
    log.addHandler(handler)
    log.propagate = False
    try:
        parent = logging.getLogger("distributed")
        parent.addHandler(handler)
        mute_library_consoles(1)
        mute_library_consoles(1)  # idempotent: one filter, not two
        assert sum(isinstance(f, ConsoleFilter) for f in handler.filters) == 1
        log.setLevel(logging.INFO)
        log.info("worker started")
        log.warning("worker memory high")
        err = capsys.readouterr().err
        assert "worker started" not in err and "worker memory high" in err
    finally:
        logging.getLogger("distributed").removeHandler(handler)
        log.removeHandler(handler)


_NIPYPE_PROBE = """
import logging, sys
from fmri_pain.execution.console import configure_console
configure_console(int(sys.argv[1]))
import nipype  # adds its own stdout handler unless its logger has one
logging.getLogger("nipype.workflow").info("nipype-info-line")
logging.getLogger("nipype.workflow").warning("nipype-warning-line")
logging.getLogger("fmri_pain.probe").info("own-info-line")
"""


@pytest.mark.parametrize("verbosity", [1, 3])
def test_nipype_prints_only_through_the_filtered_console(verbosity):
    done = subprocess.run([sys.executable, "-c", _NIPYPE_PROBE, str(verbosity)],
                          capture_output=True, text=True, timeout=120, check=True)
    assert "nipype-info-line" not in done.stdout  # nipype's own stdout handler never added
    assert done.stderr.count("nipype-warning-line") == 1
    assert ("nipype-info-line" in done.stderr) == (verbosity >= 3)
    assert ("own-info-line" in done.stderr) == (verbosity >= 2)


def test_hidden_repeats_are_counted_on_the_console_handler(capsys):
    from fmri_pain.execution.console import configure_console, hidden_repeats

    configure_console(1)
    log = logging.getLogger("fmri_pain.probe_repeats")
    for _ in range(3):
        log.warning("same words")
    assert capsys.readouterr().err.count("same words") == 1
    assert hidden_repeats() == 2
    configure_console(1)  # a fresh console starts counting again
    assert hidden_repeats() == 0
