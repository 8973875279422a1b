"""The group level's stages: one progress line each off a terminal, and a stage table with their cost."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from fmri_pain.config.spec import spec_from_dict
from tests.glm.second_level.test_group_honesty import make_trial


@pytest.fixture
def quick_figures(monkeypatch):
    import fmri_pain.report.group

    monkeypatch.setattr(fmri_pain.report.group, "glass_brain_uri", lambda *a, **k: "data:,")
    monkeypatch.setattr(fmri_pain.report.group, "design_matrix_uri", lambda *a, **k: "data:,")


def test_group_stages_are_announced_and_measured(tmp_path, quick_figures, capsys):
    from fmri_pain.pipeline.group import run_group_level

    spec = spec_from_dict({"inference": {"n_perm": 20}, "pathways": {"enabled": False}})
    runs = make_trial(tmp_path, 6, spec)
    result = run_group_level(tmp_path, runs, spec, verbosity=1)
    err = capsys.readouterr().err
    stages = ["models and thresholds", "permutations", "report"]
    # not a terminal: one plain line per stage, in order, no ANSI escape codes
    lines = [line for line in err.splitlines() if "group level " in line and "/3: " in line]
    assert [line.split("/3: ")[1] for line in lines] == stages
    assert [line.split("group level ")[1][0] for line in lines] == ["1", "2", "3"]
    assert "\x1b" not in err and "\r" not in err

    table = pd.read_csv(result.stage_log, sep="\t")
    assert result.stage_log.parent == tmp_path / "logs"
    assert list(table["stage"]) == [*stages, "total"]
    assert set(table["level"]) == {"group"} and table["subject"].isna().all()
    assert (table["wall_s"] > 0).all() and (table["cpu_s"] > 0).all()
    assert (table["peak_rss_mb"] > 0).all() and table["peak_rss_mb"].is_monotonic_increasing
    total = table.set_index("stage").loc["total"]
    assert table["wall_s"].iloc[:-1].sum() <= total["wall_s"]
    assert table["cpu_s"].iloc[:-1].sum() <= total["cpu_s"] + 1e-3
    assert result.timings == pytest.approx(dict(zip(stages, table["wall_s"].iloc[:-1])), abs=1e-3)
    latest = pd.read_csv(tmp_path / "logs" / "group_stages_latest.tsv", sep="\t")
    pd.testing.assert_frame_equal(latest, table)
    sidecar = json.loads(result.stage_log.with_suffix(".json").read_text())
    assert set(sidecar) == set(table.columns)
    assert sidecar["wall_s"]["Units"] == "s" and sidecar["peak_rss_mb"]["Units"] == "MiB"


def test_quiet_group_level_prints_no_stage_lines(tmp_path, quick_figures, capsys):
    from fmri_pain.pipeline.group import run_group_level

    spec = spec_from_dict({"inference": {"enabled": False}, "pathways": {"enabled": False}})
    result = run_group_level(tmp_path, make_trial(tmp_path, 4, spec), spec, verbosity=0)
    assert "group level" not in capsys.readouterr().err
    assert list(pd.read_csv(result.stage_log, sep="\t")["stage"]) == [
        "models and thresholds", "report", "total"]
