"""Stage measurements (wall, CPU of this process and its children, peak memory) and the stage table."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
import time

import pandas as pd

from fmri_pain.execution.stages import STAGE_COLUMNS, StageClock, stage_rows, write_stage_log


def _busy(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_clock_measures_wall_cpu_and_children():
    clock = StageClock()
    with clock.stage("sleep"):
        time.sleep(0.2)
    with clock.stage("busy"):
        _busy(0.2)
    with clock.stage("child"):  # a child waited for: its CPU and its memory count
        subprocess.run([sys.executable, "-c",
                        "import time; x = bytearray(120_000_000); e = time.process_time() + 0.3\n"
                        "while time.process_time() < e: pass"], check=True)
    total = clock.total()
    sleep, busy, child = clock.records
    assert sleep.wall_s >= 0.2 and sleep.cpu_s < 0.15
    assert busy.cpu_s >= 0.2 and busy.wall_s >= 0.2 * 0.9
    assert child.cpu_s >= 0.3 and child.children_peak_rss_mb >= 110
    assert sleep.peak_rss_mb > 0 and sleep.peak_rss_mb <= busy.peak_rss_mb <= child.peak_rss_mb
    assert total.stage == "total" and total.wall_s >= sum(r.wall_s for r in clock.records)
    assert total.cpu_s >= busy.cpu_s + child.cpu_s
    assert clock.seconds() == {r.stage: r.wall_s for r in clock.records}


def test_stage_log_tsv_and_sidecar(tmp_path):
    clock = StageClock()
    with clock.stage("first_level"):
        pass
    rows = stage_rows([*clock.records, clock.total()], level="participant", subject="01",
                      worker="host/0")
    rows += stage_rows([{"stage": "total", "wall_s": 1.23456, "cpu_s": 0.5, "peak_rss_mb": 10.0,
                         "children_peak_rss_mb": 0.0}], level="group")
    started = datetime.datetime(2026, 1, 2, 3, 4, 5)
    path = write_stage_log(rows, tmp_path, "participant", started)
    assert path == tmp_path / "participant_stages_20260102-030405.tsv"
    text = path.read_text()
    assert text.splitlines()[0].split("\t") == list(STAGE_COLUMNS)
    table = pd.read_csv(path, sep="\t", dtype={"subject": str})
    assert list(table["subject"].fillna("n/a")) == ["01", "01", "n/a"]
    assert table["wall_s"].iloc[2] == 1.235  # rounded to ms
    assert (tmp_path / "participant_stages_latest.tsv").read_text() == text
    sidecar = json.loads((tmp_path / "participant_stages_20260102-030405.json").read_text())
    assert {k: v["Description"] for k, v in sidecar.items()} == STAGE_COLUMNS
    assert sidecar["cpu_s"]["Units"] == "s" and sidecar["children_peak_rss_mb"]["Units"] == "MiB"
