"""``fmri-pain demo``: simulate a small trial and run both levels on it.

The demo is a user-facing convenience at the CLI's level: it calls the
simulator and then the very same entry points a real dataset goes through.
"""

from __future__ import annotations

import time
from pathlib import Path

from fmri_pain.bids.derivatives import write_dataset_description
from fmri_pain.bids.validator import subject_input_errors
from fmri_pain.errors import InputError
from fmri_pain.pipeline.group import run_group_level
from fmri_pain.pipeline.participant import run_participant_level, validate_bids_input
from fmri_pain.bids.layout import load_layout
from fmri_pain.simulate.dataset import simulate_trial
from fmri_pain.config.spec import load_spec

_PACKAGE = Path(__file__).resolve().parents[1]
DEMO_SPEC = _PACKAGE.parent / "pipelines" / "demo.yaml"
if not DEMO_SPEC.is_file():  # installed (non-editable): pyproject maps pipelines/ into the package
    DEMO_SPEC = _PACKAGE / "pipelines" / "demo.yaml"


def run_demo(output_dir: Path | str, n_subjects: int = 8, seed: int = 0, n_volumes: int = 200,
             voxel_size: float = 4.0, scheduler: str = "local",
             spec_file: Path | str | None = None) -> int:
    """Simulate into ``OUTPUT/sourcedata``, run participant and group levels into ``OUTPUT``.

    Returns
    -------
    int
        The exit code: 0 when every subject and the group level succeeded.
    """
    output_dir = Path(output_dir).resolve()
    start = time.perf_counter()
    sim = simulate_trial(output_dir / "sourcedata", n_subjects=n_subjects, seed=seed,
                         voxel_size=voxel_size, n_volumes=n_volumes, derivatives=True)
    print(f"[demo] simulated {n_subjects} subjects in {time.perf_counter() - start:.0f} s "
          f"-> {sim.bids_dir}")
    invalid = subject_input_errors(validate_bids_input(sim.bids_dir))
    if invalid:  # the simulator's own output: never analysed with subjects quietly missing
        raise InputError(f"the simulated dataset fails the BIDS validator for "
                         f"{', '.join(f'sub-{s}' for s in invalid)} (listed above)", path=sim.bids_dir)
    spec = load_spec(spec_file if spec_file is not None else DEMO_SPEC)
    spec = spec.replace(execution={**spec.to_dict()["execution"], "scheduler": scheduler})
    layout = load_layout(sim.bids_dir, sim.derivatives_dir, spec=spec)
    write_dataset_description(output_dir, sim.bids_dir, sim.derivatives_dir)
    summary = run_participant_level({s: layout.runs_for(s) for s in layout.subjects}, spec,
                                    output_dir)
    print(f"[demo] participant level done at {time.perf_counter() - start:.0f} s")
    result = run_group_level(output_dir, layout.runs, spec)
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in result.timings.items())
    print(f"[demo] group level done at {time.perf_counter() - start:.0f} s ({stages})")
    print(f"[demo] reports: {result.report} and {output_dir}/sub-*.html")
    print(f"[demo] ground truth: {sim.truth_dir}")
    return summary.exit_code
