"""Benchmark the participant-level execution layer: serial vs a 2-worker LocalCluster.

Run::

    .venv/bin/python benchmarks/bench_execution.py                   # numeric stand-in workload
    .venv/bin/python benchmarks/bench_execution.py --workload pipeline   # the real participant level

For 8 subjects it runs the same participant level three times in one process:

1. ``--scheduler none`` (serial, BLAS pinned to 1 thread),
2. ``--scheduler local`` with 2 workers and dask's *default* worker environment
   (``MALLOC_TRIM_THRESHOLD_=65536`` from ``distributed.nanny.pre-spawn-environ``),
3. ``--scheduler local`` with 2 workers as fmri-pain configures them (variable unset),

and prints wall times, parallel efficiency = serial / (2 x parallel) (goal >= 0.8),
peak RSS per worker, and -- for the numeric workload -- per-subject CPU time and
minor page faults, which show why (2) is slower than (3).

Workloads
---------
numeric
    Per subject, two "runs" of a 40x48x40x200 float64 BOLD array (~120 MB),
    generated from a seed file, smoothed, masked and fitted with nilearn's
    ``run_glm`` (AR(1)), z-map of an ON>OFF contrast written to disk. This is the
    array traffic of a first-level fit without the I/O of NIfTI decompression.
pipeline
    ``fmri_pain.simulate.dataset.simulate_trial`` (8 subjects, derivatives) read by
    ``fmri_pain.bids.layout.load_layout`` and run by ``fmri_pain.pipeline.participant.run_participant``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fmri_pain.execution.backends import open_client  # noqa: E402
from fmri_pain.execution.runner import run_participants  # noqa: E402
from fmri_pain.bids.derivatives import atomic_write, write_json  # noqa: E402
from fmri_pain.bids.layout import Run  # noqa: E402
from fmri_pain.config.spec import AnalysisSpec  # noqa: E402

SHAPE = (40, 48, 40)
N_VOL = 200


def numeric_task(subject, runs, spec, output_dir, work_dir):
    """A first-level-like fit on ~120 MB arrays per run (see module docstring)."""
    import pandas as pd
    from nilearn.glm import compute_contrast
    from nilearn.glm.first_level import make_first_level_design_matrix, run_glm
    from scipy.ndimage import gaussian_filter

    r0 = resource.getrusage(resource.RUSAGE_THREAD)
    out = Path(output_dir) / f"sub-{subject}" / "func"
    out.mkdir(parents=True, exist_ok=True)
    outputs = []
    for run in runs:
        seed = int(Path(run.bold).read_text())
        rng = np.random.default_rng(seed)
        frame_times = np.arange(N_VOL) * 2.0
        events = pd.DataFrame({"onset": np.arange(0, N_VOL * 2.0, 40.0), "duration": 20.0,
                               "trial_type": "on"})
        design = make_first_level_design_matrix(frame_times, events, hrf_model="spm",
                                                drift_model="cosine")
        data = rng.standard_normal(SHAPE + (N_VOL,))
        data += 0.5 * design["on"].to_numpy()  # a real effect everywhere
        data = gaussian_filter(data, sigma=(1.0, 1.0, 1.0, 0.0))
        mask = np.zeros(SHAPE, bool)
        mask[5:-5, 5:-5, 5:-5] = True
        y = data[mask].T.copy()
        del data
        labels, results = run_glm(y, design.to_numpy(), noise_model="ar1", n_jobs=1)
        con = compute_contrast(labels, results, (design.columns == "on").astype(float))
        path = out / f"sub-{subject}_ses-{run.session}_z.npy"
        with atomic_write(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, con.z_score().astype(np.float32))
        outputs.append(path)
    r1 = resource.getrusage(resource.RUSAGE_THREAD)
    stats = out / f"sub-{subject}_rusage.json"
    write_json({"utime": r1.ru_utime - r0.ru_utime, "stime": r1.ru_stime - r0.ru_stime,
                "minflt": r1.ru_minflt - r0.ru_minflt,
                "malloc_trim": os.environ.get("MALLOC_TRIM_THRESHOLD_")}, stats)
    return {"outputs": outputs + [stats]}


def numeric_dataset(root: Path, n_subjects: int) -> dict[str, list[Run]]:
    runs_by_subject = {}
    for i in range(n_subjects):
        sub = f"{i + 1:02d}"
        runs = []
        for j, ses in enumerate(("scs", "dual")):
            seed_file = root / f"sub-{sub}" / f"ses-{ses}" / "seed.txt"
            seed_file.parent.mkdir(parents=True, exist_ok=True)
            seed_file.write_text(str(1000 * i + j))
            runs.append(Run(subject=sub, session=ses, condition=ses.upper(), period=j + 1,
                            task="stim", run=None, bold=seed_file, events=None, mask=None,
                            confounds=None, metadata={"RepetitionTime": 2.0}))
        runs_by_subject[sub] = runs
    return runs_by_subject


def pipeline_dataset(root: Path, n_subjects: int):
    from fmri_pain.bids.layout import load_layout
    from fmri_pain.simulate.dataset import simulate_trial

    sim = simulate_trial(root / "sim", n_subjects=n_subjects, derivatives=True)
    layout = load_layout(sim.bids_dir, sim.derivatives_dir, spec=AnalysisSpec())
    return {s: layout.runs_for(s) for s in layout.subjects}


def _warm_up(client) -> None:
    def imports():
        import nilearn.glm.first_level  # noqa: F401
        import scipy.ndimage  # noqa: F401

        return os.getpid()

    client.run(imports)


def run_once(label: str, runs, spec: AnalysisSpec, out: Path, task, *, malloc_trim=False) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    if spec.execution.scheduler == "none":
        start = time.perf_counter()
        summary = run_participants(runs, spec, out, task=task, verbosity=0)
        wall = time.perf_counter() - start
    else:
        with open_client(spec.execution, verbosity=0, malloc_trim=malloc_trim) as client:
            _warm_up(client)
            start = time.perf_counter()
            summary = run_participants(runs, spec, out, task=task, verbosity=0,
                                                 client=client)
            wall = time.perf_counter() - start
    if summary.exit_code:
        raise SystemExit(f"{label}: subjects failed:\n{summary.format_table(failed_only=True)}")
    peak = {}
    for o in summary.outcomes:
        peak[o.worker] = max(peak.get(o.worker, 0.0), o.peak_rss_mb or 0.0)
    usage = [json.loads(p.read_text()) for p in out.glob("sub-*/func/*_rusage.json")]
    return {"label": label, "wall": wall, "peak": peak, "usage": usage,
            "task_wall": statistics.mean(o.duration_s for o in summary.outcomes)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", choices=["numeric", "pipeline"], default="numeric")
    parser.add_argument("--subjects", type=int, default=8)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="bench-execution-"))
    try:
        if args.workload == "numeric":
            runs, task = numeric_dataset(tmp / "inputs", args.subjects), numeric_task
        else:
            from fmri_pain.pipeline.participant import run_participant

            runs, task = pipeline_dataset(tmp / "inputs", args.subjects), run_participant
        base = {"retries": 0, "threads_per_worker": 1, "memory_per_worker": "6GiB"}
        serial_spec = AnalysisSpec().replace(execution={**base, "scheduler": "none"})
        local_spec = AnalysisSpec().replace(execution={**base, "scheduler": "local", "n_workers": 2})

        # warm the serial process's imports like the workers' (not timed)
        if args.workload == "numeric":
            import nilearn.glm.first_level  # noqa: F401

        results = [
            run_once("serial (--scheduler none)", runs, serial_spec, tmp / "serial", task),
            run_once("local x2, dask default env", runs, local_spec, tmp / "dask-default", task,
                     malloc_trim=True),
            run_once("local x2, fmri-pain config", runs, local_spec, tmp / "local", task),
        ]
        serial = results[0]["wall"]
        print(f"\nparticipant level, {args.subjects} subjects, workload={args.workload}, "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at end")
        print(f"{'configuration':30s} {'wall s':>8s} {'task s':>8s} {'efficiency':>10s} "
              f"{'cpu/subj':>9s} {'faults/subj':>12s}  peak RSS per worker (MB)")
        for r in results:
            eff = "" if r is results[0] else f"{serial / (2 * r['wall']):10.2f}"
            cpu = faults = ""
            if r["usage"]:
                cpu = f"{statistics.mean(u['utime'] + u['stime'] for u in r['usage']):9.2f}"
                faults = f"{statistics.mean(u['minflt'] for u in r['usage']):12.0f}"
            peaks = ", ".join(f"{w.split('/')[-1]}: {m:.0f}" for w, m in sorted(r["peak"].items()))
            print(f"{r['label']:30s} {r['wall']:8.1f} {r['task_wall']:8.2f} {eff:>10s} "
                  f"{cpu:>9s} {faults:>12s}  {peaks}")
        eff = serial / (2 * results[2]["wall"])
        print(f"\nparallel efficiency (serial / (2 x parallel)) with fmri-pain config: {eff:.2f} "
              f"(goal >= 0.80): {'PASS' if eff >= 0.8 else 'BELOW GOAL'}")
        if results[0]["usage"]:
            # CPU seconds per subject do not depend on what else the machine runs: the
            # per-task overhead of running inside a dask worker, free of load noise.
            cpu = [statistics.mean(u["utime"] + u["stime"] for u in r["usage"]) for r in results]
            print(f"CPU time per subject vs serial: dask default env x{cpu[1] / cpu[0]:.2f}, "
                  f"fmri-pain config x{cpu[2] / cpu[0]:.2f}")
        load = os.getloadavg()[0]
        if load > (os.cpu_count() or 1) + 0.5:
            print(f"note: load average {load:.1f} > {os.cpu_count()} CPUs: other processes "
                  f"compete for the cores, wall-time efficiencies are not meaningful in this run")
        return 0
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
