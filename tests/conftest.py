"""Shared fixtures: one simulated trial and one full demo run per test session.

Under pytest-xdist the expensive fixtures are built once for all workers
(a file lock in the shared base temp folder), then reused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from filelock import FileLock

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if not SHARED_DATA.is_dir():  # CI clones the repo beside a copy of shared/
    SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

os.environ.setdefault("LOGNAME", "root")
os.environ.setdefault("MPLBACKEND", "Agg")


def _shared_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.getbasetemp()
    return root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root


def _build_once(tmp_path_factory, name: str, build) -> Path:
    root = _shared_root(tmp_path_factory)
    target = root / name
    with FileLock(str(root / f"{name}.lock")):
        done = target / ".complete"
        if not done.exists():
            build(target)
            done.write_text("ok")
    return target


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (read-only real data)."""
    if not SHARED_DATA.is_dir():
        pytest.skip("shared data folder not found")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sim_trial(tmp_path_factory):
    """A simulated 8-subject trial (4 mm, 200 volumes) with derivatives and ground truth."""
    from fmri_pain.simulate.dataset import simulate_trial

    path = _build_once(tmp_path_factory, "sim_trial",
                       lambda out: simulate_trial(out, n_subjects=8, seed=42, n_volumes=200,
                                                  derivatives=True))
    return _load_sim(path)


def _load_sim(path: Path):
    from types import SimpleNamespace

    truth = json.loads((path / "truth" / "truth.json").read_text())
    return SimpleNamespace(root=path, bids_dir=path / "bids",
                           derivatives_dir=path / "derivatives" / "fmriprep",
                           truth_dir=path / "truth", truth=truth)


@pytest.fixture(scope="session")
def demo_output(tmp_path_factory, sim_trial) -> Path:
    """Participant and group levels of the default spec run on ``sim_trial``."""

    def build(out: Path) -> None:
        from fmri_pain.cli import main

        for level in ("participant", "group"):
            code = main([str(sim_trial.bids_dir), str(out), level, "--derivatives",
                         str(sim_trial.derivatives_dir), "--scheduler", "none", "--quiet"])
            assert code == 0, f"{level} level failed with exit code {code}"

    env = os.environ.get("FMRI_PAIN_DEMO_OUTPUT")
    if env:
        return Path(env)
    return _build_once(tmp_path_factory, "demo_output", build)


@pytest.fixture(scope="session")
def fake_outputs(tmp_path_factory) -> Path:
    """A small output tree with known blobs, for unit tests of the analyst API."""
    from tests.support.fake_outputs import build_fake_outputs

    return _build_once(tmp_path_factory, "fake_outputs", build_fake_outputs)
