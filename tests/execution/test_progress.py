"""Progress of the group level's stages: a bar on a terminal, plain lines elsewhere, each stage measured."""

from __future__ import annotations

import logging
import time

import pytest

import fmri_pain.execution.progress as progress_module
from fmri_pain.execution.console import configure_console
from fmri_pain.execution.progress import StageProgress


def test_plain_lines_at_start_and_with_verbosity_2_at_end(capsys):
    with StageProgress(["models", "report"], verbosity=2) as progress:
        with progress.stage("models"):
            time.sleep(0.01)
        with progress.stage("report"):
            pass
    err = capsys.readouterr().err.splitlines()
    assert [line.split("] ", 1)[1] for line in err] == [
        "group level 1/2: models", "group level 1/2: models done (0.0 s)",
        "group level 2/2: report", "group level 2/2: report done (0.0 s)"]
    assert [r.stage for r in progress.clock.records] == ["models", "report"]
    assert progress.clock.records[0].wall_s >= 0.01


def test_a_terminal_gets_one_bar_step_per_stage_and_log_lines_above_it(monkeypatch, capsys):
    monkeypatch.setattr(progress_module, "_stderr_is_tty", lambda: True)
    configure_console(1)
    with StageProgress(["models", "permutations", "report"], verbosity=1) as progress:
        bar = progress.bar
        assert bar is not None and bar.total == 3
        for name in progress.stages:
            with progress.stage(name):
                logging.getLogger("fmri_pain.probe").warning("warned during %s", name)
            assert bar.postfix == name
        assert bar.n == 3
    err = capsys.readouterr().err
    # the warnings are printed as whole lines (tqdm.write), not into the bar
    assert sum("fmri_pain.probe WARNING: warned during" in line for line in err.splitlines()) == 3
    assert "group level 1/3: models" not in err  # the bar replaces the plain lines


def test_a_failing_stage_is_measured_and_raises():
    progress = StageProgress(["models"], verbosity=0)
    with pytest.raises(RuntimeError):
        with progress.stage("models"):
            raise RuntimeError("boom")
    assert [r.stage for r in progress.clock.records] == ["models"]
