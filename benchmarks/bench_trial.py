"""Benchmark the cost curve of a whole trial: simulate, participant and group for N subjects.

Run::

    .venv/bin/python benchmarks/bench_trial.py                       # 8, 16, 32 subjects
    .venv/bin/python benchmarks/bench_trial.py --subjects 8 16       # fewer sizes
    .venv/bin/python benchmarks/bench_trial.py --quick               # smoke run (tiny sizes)
    .venv/bin/python benchmarks/bench_trial.py --work W2 --simulation W1/sim
                                          # re-analyse a kept (--keep) simulation

It runs, through the command line only, each stage as a subprocess:

1. ``fmri-pain simulate OUT --derivatives`` (3 sessions SCS / DRGS / DUAL, one run
   each; fMRIPrep-style derivatives, as ``fmri-pain demo`` does), once for the largest
   size; each size then analyses its first N subjects (``--participant-label``), so the
   simulation, which is not part of an analysis, is paid once (``--simulate-per-size``:
   one simulation per size, as before);
2. for each size, ``fmri-pain BIDS OUT participant --derivatives ...`` (first level,
   contrasts) into a fresh output folder,
3. then ``fmri-pain BIDS OUT group --derivatives ...`` (crossover models, 1,000
   permutations with TFCE, pain pathways with connectivity and decoding),

with a spec written into the work folder (``--n-perm``, TFCE and pathways on, the
trial defaults otherwise; ``inference.n_jobs`` 1 as in ``pipelines/trial.yaml``).

Measured per stage:

* wall time;
* CPU time (user + sys) of the whole process tree: ``getrusage(RUSAGE_CHILDREN)``
  deltas around the subprocess (dask workers are children of the CLI and are waited
  for, so their time is included);
* peak memory: the RSS of the process tree polled every 0.2 s with psutil (max of the
  sum over processes, and the largest single process).

Then a least-squares fit of log(time) = a + b log(n_subjects) per stage gives the
growth exponent b, and the fit extrapolates to 66 patients (the size of the largest
DRG-vs-SCS imaging cohorts) on 2 cores and on a 16-node SLURM allocation (see the
printed assumptions).  The per-run preprocessing (raw route) is not part of this
benchmark: ``bench_preprocess.py`` measures it.
"""

from __future__ import annotations

import argparse
import ast
import math
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
CLI = Path(sys.executable).with_name("fmri-pain")
TARGET = 66  # largest DRG-vs-SCS imaging cohorts
SLURM_NODES = 16
N_SESSIONS = 3  # the simulator writes SCS, DRGS and DUAL sessions, one run each
STAGES = ("simulate", "participant", "group")

SPEC = """\
# bench_trial.py: the trial defaults with the benchmark's permutations
inference:
  enabled: true
  n_perm: {n_perm}
  tfce: true
pathways:
  enabled: true
  connectivity: true
  decoding: true
execution:
  scheduler: {scheduler}
"""


class TreeSampler(threading.Thread):
    """Poll the RSS of a process and its descendants; keep the max sum and max single."""

    def __init__(self, pid: int, interval: float = 0.2):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_sum = self.peak_single = 0
        self.max_procs = 0
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self._halt.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            rss = []
            for p in procs:
                try:
                    rss.append(p.memory_info().rss)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            if rss:
                self.peak_sum = max(self.peak_sum, sum(rss))
                self.peak_single = max(self.peak_single, max(rss))
                self.max_procs = max(self.max_procs, len(rss))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def measure(cmd: list[str], log: Path) -> dict:
    """Run ``cmd``; wall, CPU (user+sys of the tree) and peak RSS (tree sum, largest)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        rc = proc.wait()
        sampler.stop()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if rc != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
        raise SystemExit(f"{' '.join(cmd)} failed (exit {rc}); last lines of {log}:\n{tail}")
    return {"wall": wall, "cpu": cpu, "peak_mb": sampler.peak_sum / 2**20,
            "single_mb": sampler.peak_single / 2**20, "procs": sampler.max_procs}


def simulate_command(sim: Path, n: int, args) -> list[str]:
    return [str(CLI), "simulate", str(sim), "--subjects", str(n), "--seed", "0",
            "--volumes", str(args.volumes), "--voxel-size", str(args.voxel_size),
            "--derivatives", "-q"]


def report_stage(n: int, stage: str, r: dict, t0: str) -> None:
    print(f"  [{n} subjects] {stage:11s} started {t0}: wall {r['wall']:7.1f} s, "
          f"CPU {r['cpu']:7.1f} s, peak {r['peak_mb']:6.0f} MB (largest process "
          f"{r['single_mb']:.0f} MB, {r['procs']} processes), load "
          f"{os.getloadavg()[0]:.1f}", flush=True)


def run_size(n: int, args, work: Path, shared_sim: Path | None = None) -> dict:
    """Participant and group for ``n`` subjects (and their simulation unless ``shared_sim``
    holds a larger one, whose first ``n`` subjects are then analysed)."""
    folder = work / f"n{n:03d}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    spec = folder / "spec.yaml"
    spec.write_text(SPEC.format(n_perm=args.n_perm, scheduler=args.scheduler))
    sim, out = shared_sim or folder / "sim", folder / "out"
    bids, deriv = sim / "bids", sim / "derivatives" / "fmriprep"
    execution = ["--scheduler", args.scheduler]
    if args.scheduler == "local":
        execution += ["--n-workers", str(args.n_workers)]
    select = []
    if shared_sim is not None:
        labels = sorted(p.name[4:] for p in bids.glob("sub-*") if p.is_dir())[:n]
        if len(labels) < n:
            raise SystemExit(f"{bids} holds {len(labels)} subjects, fewer than {n}")
        select = ["--participant-label", *labels]
    cmds = {
        "simulate": simulate_command(sim, n, args),
        "participant": [str(CLI), str(bids), str(out), "participant", "--derivatives",
                        str(deriv), "--spec", str(spec), "--work-dir", str(folder / "work"),
                        *execution, *select, "-q"],
        "group": [str(CLI), str(bids), str(out), "group", "--derivatives", str(deriv),
                  "--spec", str(spec), "--work-dir", str(folder / "work"), *execution,
                  *select, "-v"],
    }
    result = {}
    for stage in STAGES:
        if stage == "simulate" and shared_sim is not None:
            continue
        t0 = time.strftime("%H:%M:%S")
        result[stage] = measure(cmds[stage], folder / f"{stage}.log")
        report_stage(n, stage, result[stage], t0)
    match = re.search(r"group level timings: (\{[^}]*\})", (folder / "group.log").read_text())
    log = (folder / "group.log").read_text()
    result["group_parts"] = ast.literal_eval(match.group(1)) if match else {}
    exact = re.findall(r"all (\d+) were used once each", log)
    if exact:  # small designs: fewer distinct rearrangements than n_perm, all used once
        print(f"  [{n} subjects] exact tests: {len(exact)} permutation tests used all of their "
              f"{', '.join(sorted(set(exact), key=int))} distinct rearrangements (< n_perm "
              f"{args.n_perm}): the permutation cost at this size is below that of n_perm",
              flush=True)
    result["exact"] = len(exact)
    if result["group_parts"]:
        print(f"  [{n} subjects] group parts (wall s, from the group log): "
              + ", ".join(f"{k} {v:.0f}" for k, v in result["group_parts"].items()), flush=True)
    if not args.keep and shared_sim is None:
        shutil.rmtree(sim, ignore_errors=True)  # the inputs are the bulk of the disk use
    return result


def fit_exponent(ns: list[int], values: list[float]) -> tuple[float, float] | None:
    """Least squares of log(value) = a + b log(n); None with fewer than 2 sizes."""
    if len(set(ns)) < 2 or min(values) <= 0:
        return None
    b, a = np.polyfit(np.log(ns), np.log(values), 1)
    return float(a), float(b)


def predict(fit, n: int) -> float:
    return math.exp(fit[0] + fit[1] * math.log(n))


def preprocess_figure() -> float | None:
    """The last measured per-run preprocessing time (s) in benchmarks/README.md, if any."""
    text = (ROOT / "benchmarks" / "README.md").read_text()
    section = text.split("## Preprocessing", 1)[-1].split("\n## ", 1)[0]
    match = re.search(r"\*\*([\d.]+) s wall", section)  # the section's bold measured figure
    return float(match.group(1)) if match else None


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, nargs="+", default=None,
                        help="numbers of subjects (default 8 16 32; --quick: 3 5)")
    parser.add_argument("--voxel-size", type=float, default=None, help="mm (default 3)")
    parser.add_argument("--volumes", type=int, default=None, help="per run (default 200)")
    parser.add_argument("--n-perm", type=int, default=None, help="permutations (default 1000)")
    parser.add_argument("--work", type=Path, default=None,
                        help="work folder (default: a temporary folder under /tmp)")
    parser.add_argument("--scheduler", default="local",
                        help="participant/group scheduler (default local, with --n-workers)")
    parser.add_argument("--n-workers", type=int, default=2, help="local workers (default 2)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 3 and 5 subjects, 6 mm, 60 volumes, 100 permutations")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--simulate-per-size", action="store_true",
                        help="simulate each size separately (default: simulate the largest "
                             "once and analyse its first N subjects at each size)")
    parser.add_argument("--simulation", type=Path, default=None,
                        help="analyse this earlier simulation (a folder written by a run "
                             "with --keep, WORK/sim, holding at least the largest N "
                             "subjects at the same voxel size and volumes) instead of "
                             "simulating again; the table then has no simulate row")
    args = parser.parse_args(argv)
    quick = dict(subjects=[3, 5], voxel_size=6.0, volumes=60, n_perm=100)
    full = dict(subjects=[8, 16, 32], voxel_size=3.0, volumes=200, n_perm=1000)
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    ns = sorted(set(args.subjects))

    created = args.work is None
    work = Path(tempfile.mkdtemp(prefix="bench-trial-", dir="/tmp")) if created else args.work
    work.mkdir(parents=True, exist_ok=True)
    print(f"trial cost curve: subjects {ns}, {N_SESSIONS} sessions, {args.voxel_size:g} mm, "
          f"{args.volumes} volumes, {args.n_perm} permutations with TFCE, pathways on; "
          f"scheduler {args.scheduler}"
          + (f" x{args.n_workers} workers" if args.scheduler == "local" else "")
          + f"; {os.cpu_count()} CPUs; work {work}")
    print("inputs: fMRIPrep-style derivatives from the simulator (the raw route's per-run "
          "preprocessing is measured separately by bench_preprocess.py)")
    load_start = os.getloadavg()
    print(f"load average at start: {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}",
          flush=True)
    results = {}
    try:
        shared_sim = None
        if args.simulation is not None:
            shared_sim = args.simulation.resolve()
            if not (shared_sim / "derivatives" / "fmriprep").is_dir():
                raise SystemExit(f"--simulation {shared_sim}: no simulated derivatives/fmriprep "
                                 "there (a --keep run's WORK/sim)")
            if shared_sim.is_relative_to(work.resolve()):
                raise SystemExit(f"--simulation {shared_sim} is inside --work; pass another "
                                 "--work (each size's folder there is replaced)")
            print(f"inputs simulated earlier: {shared_sim} (not re-simulated, not timed)")
        elif not args.simulate_per_size:
            shared_sim = work / "sim"
            shutil.rmtree(shared_sim, ignore_errors=True)
            t0 = time.strftime("%H:%M:%S")
            simulated = measure(simulate_command(shared_sim, max(ns), args), work / "simulate.log")
            report_stage(max(ns), "simulate", simulated, t0)
        for n in ns:
            results[n] = run_size(n, args, work, shared_sim)
        if shared_sim is not None and args.simulation is None:
            results[max(ns)]["simulate"] = simulated
    finally:
        if created and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        elif args.keep:
            print(f"kept {work}")
    load_end = os.getloadavg()

    # ---- table --------------------------------------------------------------------------
    print(f"\n{'subjects':>8s} {'stage':11s} {'wall s':>8s} {'CPU s':>8s} {'CPU/wall':>8s} "
          f"{'wall/subj':>9s} {'CPU/subj':>9s} {'peak MB':>8s} {'largest MB':>10s} "
          f"{'MB/subj':>8s}")
    for n in ns:
        for stage in (s for s in STAGES if s in results[n]):
            r = results[n][stage]
            print(f"{n:8d} {stage:11s} {r['wall']:8.1f} {r['cpu']:8.1f} "
                  f"{r['cpu'] / r['wall']:8.2f} {r['wall'] / n:9.2f} {r['cpu'] / n:9.2f} "
                  f"{r['peak_mb']:8.0f} {r['single_mb']:10.0f} {r['peak_mb'] / n:8.1f}")
        tw = sum(results[n][s]["wall"] for s in ("participant", "group"))
        tc = sum(results[n][s]["cpu"] for s in ("participant", "group"))
        print(f"{n:8d} {'analysis':11s} {tw:8.1f} {tc:8.1f} {tc / tw:8.2f} {tw / n:9.2f} "
              f"{tc / n:9.2f}   (participant + group)")

    # ---- growth exponents ---------------------------------------------------------------
    fits = {}
    print("\ngrowth exponent b of log(y) = a + b log(n_subjects) (1 = linear):")
    for stage in STAGES:
        row = []
        if all(stage not in results[n] for n in ns):
            print(f"  {stage:11s} not run (--simulation: inputs simulated earlier)")
            continue
        if any(stage not in results[n] for n in ns):
            print(f"  {stage:11s} n/a (run once, for {max(ns)} subjects)")
            continue
        for key, label in (("wall", "wall"), ("cpu", "CPU"), ("peak_mb", "peak memory"),
                           ("single_mb", "largest process")):
            fit = fit_exponent(ns, [results[n][stage][key] for n in ns])
            fits[stage, key] = fit
            row.append(f"{label} {fit[1]:.2f}" if fit else f"{label} n/a")
        print(f"  {stage:11s} " + ", ".join(row))
    if len(ns) < 2:
        print("  (one size only: no fit, no extrapolation)")
        return 0

    # ---- extrapolation to 66 -------------------------------------------------------------
    pw, pc = fits["participant", "wall"], fits["participant", "cpu"]
    gw, gc = fits["group", "wall"], fits["group", "cpu"]
    part_wall, part_cpu = predict(pw, TARGET), predict(pc, TARGET)
    group_wall, group_cpu = predict(gw, TARGET), predict(gc, TARGET)
    cores = 2
    print(f"\nextrapolated to {TARGET} patients (fits above; {TARGET / max(ns):.1f}x the largest "
          f"size measured):")
    print(f"  2 cores, from wall time:      participant {hours(part_wall)} + group "
          f"{hours(group_wall)} = {hours(part_wall + group_wall)}")
    print(f"  2 cores, from CPU time / {cores}:  participant {hours(part_cpu / cores)} + group "
          f"{hours(group_cpu / cores)} = {hours((part_cpu + group_cpu) / cores)}  "
          f"(perfect use of both cores; the group level's CPU/{cores} is a lower bound, its "
          f"permutations run on inference.n_jobs = 1 thread)")
    # SLURM: one subject per node per round; the group level on one node
    rounds = math.ceil(TARGET / SLURM_NODES)
    largest = max(ns)
    r = results[largest]["participant"]
    per_subject_wall = r["wall"] * min(args.n_workers, largest) / largest \
        if args.scheduler == "local" else r["wall"] / largest
    per_subject_cpu = r["cpu"] / largest
    slurm_part = rounds * per_subject_wall
    slurm_part_cpu = rounds * per_subject_cpu
    print(f"  SLURM, {SLURM_NODES} nodes:  participant {rounds} rounds x {per_subject_wall:.0f} s "
          f"(one subject's wall time = participant wall x workers / subjects at {largest}) = "
          f"{hours(slurm_part)} [CPU-based: {rounds} x {per_subject_cpu:.0f} s = "
          f"{hours(slurm_part_cpu)}] + group on one node {hours(group_wall)} = "
          f"{hours(slurm_part + group_wall)} [{hours(slurm_part_cpu + group_cpu)}]")
    print("    assumptions: one subject per node at a time, node as fast as one core here, "
          "no queue wait, job start-up and shared-filesystem I/O not counted; the group "
          "level does not distribute, so it runs on one node with the wall time of the fit")
    small = [n for n in ns if results[n].get("exact")]
    if small:
        print(f"    note: at {', '.join(map(str, small))} subjects some permutation tests were exact "
              f"(fewer distinct rearrangements than n_perm), so the group level's exponent "
              f"includes the growth of the permutation count itself, which stops at n_perm: "
              f"the group extrapolation is an upper bound")
    pre = preprocess_figure()
    runs = TARGET * N_SESSIONS
    if pre is None:
        print(f"  raw route, per-run preprocessing: no measured figure found in "
              f"benchmarks/README.md (bench_preprocess.py's goal is < 120 s per run); at the "
              f"goal it would add {runs} runs x 120 s = {hours(runs * 120)} of core time "
              f"({hours(runs * 120 / cores)} on 2 cores, "
              f"{hours(rounds * N_SESSIONS * 120)} on {SLURM_NODES} nodes) -- goal, not a "
              f"measurement")
    else:
        print(f"  raw route, per-run preprocessing {pre:.0f} s (taken from benchmarks/README.md, "
              f"bench_preprocess.py): {runs} runs = {hours(runs * pre)} of core time, "
              f"{hours(runs * pre / cores)} on 2 cores, {hours(rounds * N_SESSIONS * pre)} on "
              f"{SLURM_NODES} nodes")

    # ---- ratio-style summary ------------------------------------------------------------
    lo, hi = min(ns), max(ns)
    print(f"\nsummary ({lo} -> {hi} subjects, x{hi / lo:.1f}):")
    for stage in (s for s in STAGES if s in results[lo]):
        a, b = results[lo][stage], results[hi][stage]
        print(f"  {stage:11s} wall x{b['wall'] / a['wall']:.2f}, CPU x{b['cpu'] / a['cpu']:.2f}, "
              f"peak memory x{b['peak_mb'] / a['peak_mb']:.2f} "
              f"({a['peak_mb']:.0f} -> {b['peak_mb']:.0f} MB)")
    mem = fits["group", "peak_mb"]
    slope = (results[hi]["group"]["peak_mb"] - results[lo]["group"]["peak_mb"]) / (hi - lo)
    bounded = mem[1] <= 0.5
    print(f"  group peak memory exponent {mem[1]:.2f} ({slope:+.1f} MB per added subject; "
          f"{predict(mem, TARGET):.0f} MB extrapolated at {TARGET}): "
          f"{'bounded (<= 0.5)' if bounded else 'GROWS with subjects (> 0.5)'}")
    print(f"load average at end: {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}")
    if max(load_start[0], load_end[0]) > (os.cpu_count() or 1) + 0.5:
        print(f"note: load average > {os.cpu_count()} CPUs: other processes compete for the "
              f"cores; wall times are inflated, CPU times are the figures to compare")
    return 0


if __name__ == "__main__":
    sys.exit(main())
