"""Benchmark: the project's first level vs a plain nilearn script on the same run.

Usage::

    .venv/bin/python benchmarks/bench_first_level.py [--shape 64 64 40 300] [--repeats 3] [--data DIR]

Generates one fMRIPrep-style run (``desc-preproc_bold``, ``desc-brain_mask``,
``desc-confounds_timeseries.tsv`` with 24 motion columns, FD, std DVARS and
cosines, ``events.tsv`` with ON blocks and a nuisance ``rating`` event), then
times, each in a fresh subprocess (imports excluded from the timing, peak RSS of
the process measured):

* ``project``: ``fmri_pain.glm.first_level.subject.first_level_subject`` on the run, i.e. the
  participant-level stage including writing the maps, sidecars (with sha256 of
  the inputs) and the design TSV + PNG;
* ``nilearn``: ``load_confounds`` + ``FirstLevelModel(...).fit(bold, events,
  confounds, sample_masks)`` + ``compute_contrast("on", output_type="all")``
  with the same settings (SPM HRF, AR(1), motion24 + censoring, cosine 128 s as
  the one drift basis, so the TSV's cosines are not loaded; 6 mm, the brain mask).

Prints the wall and CPU time ratios (goal >= 10), the peak-memory ratio (goal
<= 0.5), the correlation of the z maps inside the mask with nilearn's and with
the project's own float64 GLM (``project64``, one more untimed subprocess; goal
>= 0.9999 for both), the load average after each run, and the project's time per
step (``fmri_pain.glm.first_level.timing``: decompress, smooth (and mask), design,
fit, contrasts, write).

The stage gets a thread budget ``blas_threads`` (the participant level passes
``execution.threads_per_worker``, default 1; here ``--threads``, default all
CPUs, as one subject alone on the machine): with more than 1 it smooths blocks,
fits voxel chunks and writes maps in that many threads at one BLAS thread each,
and draws the design plot in a thread of its own while the BOLD is read; the
printed summary says how many it used;
plain nilearn uses OpenBLAS's default, which on a busy 2-core machine makes its
small per-bin pseudo-inverses very slow. Run with ``OPENBLAS_NUM_THREADS=1`` to
compare both at one BLAS thread (the like-for-like figure).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STEM = "sub-01_task-stim"
# the synthetic grid is in no template, so the names carry no space- entity (nilearn's
# load_confounds does not need one)
BOLD = f"{STEM}_desc-preproc_bold.nii.gz"
MASK = f"{STEM}_desc-brain_mask.nii.gz"
CONFOUNDS = f"{STEM}_desc-confounds_timeseries.tsv"
EVENTS = f"{STEM}_events.tsv"
TR = 2.0
STEP_NAMES = ("decompress", "smooth", "design", "fit", "contrasts", "write")


def make_run(folder: Path, shape: tuple[int, int, int, int], seed: int = 0) -> None:
    """Write a synthetic fMRIPrep-style run with a known active box."""
    import nibabel as nib
    import pandas as pd
    from nilearn.glm.first_level import make_first_level_design_matrix

    from fmri_pain.simulate.confounds import motion_expansion

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    *space, n = shape
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    affine[:3, 3] = [-(s * 3.0) / 2 for s in space]
    grid = np.meshgrid(*[np.linspace(-1, 1, s) for s in space], indexing="ij")
    mask = (grid[0] ** 2 / 0.8 + grid[1] ** 2 / 0.9 + grid[2] ** 2 / 0.8) < 1
    on = pd.DataFrame({"onset": np.arange(0, n * TR, 60.0), "duration": 30.0, "trial_type": "on"})
    rating = pd.DataFrame({"onset": np.arange(35.0, n * TR, 120.0), "duration": 2.0,
                           "trial_type": "rating"})
    events = pd.concat([on, rating]).sort_values("onset").reset_index(drop=True)
    events.to_csv(folder / EVENTS, sep="\t", index=False)
    regressor = make_first_level_design_matrix(np.arange(n) * TR, events, hrf_model="spm",
                                               drift_model=None)["on"].to_numpy()
    active = np.zeros(space, dtype=bool)
    sl = tuple(slice(s * 3 // 10, s * 5 // 10) for s in space)
    active[sl] = True
    data = np.empty((*space, n), dtype=np.float32)
    drift = np.linspace(0, 5, n)
    ar = np.zeros(space, dtype=np.float32)
    for t in range(n):
        ar = 0.3 * ar + rng.standard_normal(space, dtype=np.float32) * 10
        data[..., t] = (1000 * mask + 50) + drift[t] + 15 * active * regressor[t] + ar * mask
    nib.Nifti1Image(data, affine).to_filename(folder / BOLD)
    nib.Nifti1Image(mask.astype(np.uint8), affine).to_filename(folder / MASK)
    motion = rng.standard_normal((n, 6)).cumsum(0) * 0.01
    cols = motion_expansion(motion)  # the simulator's truth, not the analysis' own expansion
    fd = np.abs(rng.standard_normal(n)) * 0.1
    fd[[n // 6, n // 2, n // 2 + 1]] = 0.9
    fd[0] = np.nan
    cols["framewise_displacement"] = fd
    cols["std_dvars"] = np.r_[np.nan, 1 + 0.1 * rng.standard_normal(n - 1)]
    for k in range(int(2 * n * TR / 128)):
        cols[f"cosine{k:02d}"] = np.sqrt(2 / n) * np.cos(np.pi * (np.arange(n) + 0.5) * (k + 1) / n)
    pd.DataFrame(cols).to_csv(folder / CONFOUNDS, sep="\t", index=False, na_rep="n/a")


# ----------------------------------------------------------------------------- children
def _child_project(folder: Path, out: Path, float64: bool = False) -> dict:
    from matplotlib.figure import Figure  # noqa: F401  (lazy imports of the stage, per process)
    from nilearn.plotting import plot_design_matrix  # noqa: F401

    from fmri_pain.glm.first_level import timing
    from fmri_pain.glm.first_level.subject import first_level_subject
    from fmri_pain.pipeline.participant import first_level_settings
    from fmri_pain.bids.runs import Run
    from fmri_pain.config.spec import spec_from_dict

    run = Run(subject="01", session=None, condition="stim", period=None, task="stim", run=None,
              bold=folder / BOLD, events=folder / EVENTS, mask=folder / MASK,
              confounds=folder / CONFOUNDS, metadata={"RepetitionTime": TR})
    spec = spec_from_dict({"first_level": {"confounds": {"strategy": "motion24"}}})
    if float64:  # the same stage with the GLM's data products in float64 (z maps compared)
        import functools

        from fmri_pain.glm.first_level import fit
        fit.ar1_glm = functools.partial(fit.ar1_glm, dtype=np.float64)
    timing.reset()
    t0, c0 = time.perf_counter(), time.process_time()
    threads = int(os.environ.get("BENCH_FIRST_LEVEL_THREADS", "1"))
    maps = first_level_subject([run], first_level_settings(spec), out / "derivatives",
                               blas_threads=threads)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    path = maps.maps.query("contrast == 'stim' and stat == 'z'")["path"].iloc[0]
    return {"time": elapsed, "cpu": cpu, "z": str(path), "threads": threads, "steps": timing.totals(), "step_cpu": timing.cpu_totals(),
            "n_censored": int(maps.qc["n_censored"].sum())}


def _child_nilearn(folder: Path, out: Path) -> dict:
    import pandas as pd
    from nilearn.glm.first_level import FirstLevelModel
    from nilearn.interfaces.fmriprep import load_confounds

    t0, c0 = time.perf_counter(), time.process_time()
    confounds, sample_mask = load_confounds(
        str(folder / BOLD), strategy=("motion", "scrub"), motion="full", scrub=5,
        fd_threshold=0.5, std_dvars_threshold=1.5)
    events = pd.read_csv(folder / EVENTS, sep="\t")
    model = FirstLevelModel(t_r=TR, hrf_model="spm", noise_model="ar1", drift_model="cosine",
                            high_pass=1 / 128, smoothing_fwhm=6.0, mask_img=str(folder / MASK))
    model.fit(str(folder / BOLD), events=events, confounds=confounds, sample_masks=sample_mask)
    maps = model.compute_contrast("on", output_type="all")
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    path = out / "nilearn_z.nii.gz"
    maps["z_score"].to_filename(path)
    return {"time": elapsed, "cpu": cpu, "z": str(path)}


def _child(which: str, folder: str, out: str) -> None:
    import resource
    import warnings

    warnings.simplefilter("ignore")
    if which == "nilearn":
        result = _child_nilearn(Path(folder), Path(out))
    else:
        result = _child_project(Path(folder), Path(out), float64=which == "project64")
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


def _spawn(which: str, folder: Path, out: Path, threads: int = 1) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "BENCH_FIRST_LEVEL_THREADS": str(threads)}
    proc = subprocess.run([sys.executable, __file__, "--child", which, str(folder), str(out)],
                          capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{which} failed:\n{proc.stderr[-3000:]}")
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    result = json.loads(line[len("RESULT "):])
    result["load"] = os.getloadavg()[0]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", type=int, nargs=4, default=(64, 64, 40, 300))
    parser.add_argument("--repeats", type=int, default=3, help="runs per approach (best time kept)")
    parser.add_argument("--data", type=Path, default=None, help="reuse/keep the data in this folder")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="the project's thread budget (blas_threads, i.e. one worker's "
                             "execution.threads_per_worker; default: all CPUs, one subject alone)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return

    import nibabel as nib

    with tempfile.TemporaryDirectory(prefix="bench-first-level-") as tmp:
        folder = args.data or Path(tmp) / "data"
        if not (folder / BOLD).exists():
            t0 = time.perf_counter()
            make_run(folder, tuple(args.shape))
            print(f"generated {tuple(args.shape)} run in {time.perf_counter() - t0:.1f} s")
        results: dict[str, list[dict]] = {"project": [], "nilearn": []}
        for i in range(args.repeats):
            for which in ("nilearn", "project") if i % 2 == 0 else ("project", "nilearn"):
                out = Path(tmp) / f"{which}-{i}"
                out.mkdir()
                res = _spawn(which, folder, out, args.threads)
                results[which].append(res)
                print(f"  {which:8s} run {i + 1}: {res['time']:6.2f} s wall, {res['cpu']:6.2f} s CPU, "
                      f"peak RSS {res['peak_rss_mb']:7.1f} MB, load average {res['load']:.1f}",
                      flush=True)
        out = Path(tmp) / "project64"
        out.mkdir()
        ref64 = _spawn("project64", folder, out, args.threads)  # z of the float64 GLM, not timed
        best = {k: min(v, key=lambda r: r["time"]) for k, v in results.items()}
        mask = np.asarray(nib.load(folder / MASK).dataobj) > 0
        z_project = np.asarray(nib.load(best["project"]["z"]).dataobj)[mask]
        z_nilearn = np.asarray(nib.load(best["nilearn"]["z"]).dataobj)[mask]
        z_64 = np.asarray(nib.load(ref64["z"]).dataobj)[mask]
        corr = float(np.corrcoef(z_project, z_nilearn)[0, 1])
        corr64 = float(np.corrcoef(z_project, z_64)[0, 1])
        t_ratio = best["nilearn"]["time"] / best["project"]["time"]
        cpu = {k: min(r["cpu"] for r in v) for k, v in results.items()}
        c_ratio = cpu["nilearn"] / cpu["project"]
        peak = {k: max(r["peak_rss_mb"] for r in v) for k, v in results.items()}
        m_ratio = peak["project"] / peak["nilearn"]
        loads = [r["load"] for v in results.values() for r in v]
        print(f"shape {tuple(args.shape)}, censored volumes {best['project']['n_censored']}, "
              f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, "
              f"load average {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} CPUs, "
              f"project threads {best['project']['threads']} (--threads), nilearn: OpenBLAS's own")
        print(f"time    nilearn {best['nilearn']['time']:.2f} s, project {best['project']['time']:.2f} s, "
              f"speed-up {t_ratio:.2f}x (goal >= 10)")
        print(f"CPU     nilearn {cpu['nilearn']:.2f} s, project {cpu['project']:.2f} s, "
              f"ratio {c_ratio:.2f}x (less sensitive to other load on the machine)")
        print(f"memory  nilearn {peak['nilearn']:.0f} MB, project {peak['project']:.0f} MB, "
              f"ratio {m_ratio:.2f} (goal <= 0.5)")
        print(f"z corr  {corr:.6f} with nilearn (goal >= 0.9999), max |dz| "
              f"{np.abs(z_project - z_nilearn).max():.4f}; {corr64:.8f} with our float64 GLM, "
              f"max |dz| {np.abs(z_project - z_64).max():.2e}")
        steps, step_cpu = best["project"]["steps"], best["project"]["step_cpu"]
        print("project steps, ms wall / CPU (fastest run; --threads 1: decompress in a reader "
              "thread, overlapping smooth; --threads > 1: decompress and smooth (with the masking) in each "
              "of the threads, summed over them, and fit / write CPU are the process's):")
        print("  " + ", ".join(f"{k} {steps.get(k, 0.0) * 1000:.0f} / {step_cpu.get(k, 0.0) * 1000:.0f}"
                               for k in STEP_NAMES))
        design = steps.get("design", 0.0)
        after = sum(steps.get(k, 0.0) for k in ("fit", "contrasts", "write"))
        print(f"  wall: design (before the BOLD is read) {design * 1000:.0f} ms, read + smooth "
              f"(until the data are in memory, events, ...) "
              f"{(best['project']['time'] - design - after) * 1000:.0f} ms, then fit + contrasts + "
              f"write {after * 1000:.0f} ms")
        ok = min(corr, corr64) >= 0.9999 and m_ratio <= 0.5
        print("RESULT", "ok" if ok and t_ratio >= 10 else "below goal")

if __name__ == "__main__":
    main()
