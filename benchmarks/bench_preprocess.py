"""Benchmark: per-run preprocessing of a 64x64x36 x 200-volume series on 2 cores.

Run:  .venv/bin/python benchmarks/bench_preprocess.py [--volumes 200] [--keep DIR] [--no-reference]
                                                      [--compare OTHER_KEEP_DIR]
                                                      [--plugin Linear|MultiProc] [--n-procs N]

Builds a synthetic run (nilearn's MNI template at 3.5 mm, moved rigidly off
MNI, with head motion, interleaved slice timing and noise; a 2 mm T1w with the
same offset), then, each in a fresh subprocess:

1. ``preprocess_subject`` (Nipype, python backend, Linear plugin or ``--plugin``): non-steady
   detection, realignment, slice timing, T1w brain extraction + normalization,
   EPI->T1w coregistration, one-shot resampling to MNI, confounds, QC;
2. the reference: ``ants.motion_correction`` (rigid) on the same series alone.

Prints wall time, CPU time (user + system of the child and its descendants, e.g.
MultiProc's workers), peak memory (the largest sum of the RSS of the child and its
descendants, polled every 0.1 s, and the child's own ``ru_maxrss``), the ratio,
the per-node times (from Nipype's node reports) and the load average at start and end.
``--compare DIR`` reports the largest absolute difference of the preprocessed
BOLD, mask and confounds from those of an earlier ``--keep DIR`` run (same
data: the data are generated from a fixed seed).  Goal: one run in <= 12 s
wall with peak memory <= 1 GB (the former goal was < 120 s).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_trial import TreeSampler  # noqa: E402  (RSS of a process tree, summed)

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (64, 64, 36)
VOXEL = 3.5


def rigid(p) -> np.ndarray:
    """4x4 rigid matrix of (tx, ty, tz, rx, ry, rz) about the world origin (the simulator's motion)."""
    cx, sx, cy, sy, cz, sz = np.cos(p[3]), np.sin(p[3]), np.cos(p[4]), np.sin(p[4]), np.cos(p[5]), np.sin(p[5])
    r = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]]) @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]]) \
        @ np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = p[:3]
    return m


def make_data(folder: Path, n_vol: int, seed: int = 0) -> dict:
    import nibabel as nib
    from nilearn import datasets
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    tpl = datasets.load_mni152_template(resolution=1)
    src = np.asarray(tpl.dataobj, dtype=np.float32)
    src = ndimage.gaussian_filter(src, 1.2)
    aff = np.diag([VOXEL] * 3 + [1.0])
    aff[:3, 3] = -(np.asarray(SHAPE) - 1) / 2 * VOXEL + np.array([0, -18, 10])

    native_from_mni = rigid([4.0, -3.0, 5.0, 0.05, -0.04, 0.06])
    motion = np.cumsum(rng.normal(0, [0.05] * 3 + [0.0008] * 3, (n_vol, 6)), axis=0)
    tr = 2.0
    order = np.r_[np.arange(0, SHAPE[2], 2), np.arange(1, SHAPE[2], 2)]
    st = np.empty(SHAPE[2])
    st[order] = np.arange(SHAPE[2]) * tr / SHAPE[2]
    t_axis = np.arange(n_vol) * tr
    data = np.empty(SHAPE + (n_vol,), np.float32)
    slow = np.sin(2 * np.pi * t_axis / 40.0)
    for t in range(n_vol):
        q = np.linalg.inv(tpl.affine) @ np.linalg.inv(native_from_mni) @ np.linalg.inv(rigid(motion[t])) @ aff
        vol = ndimage.affine_transform(src, q[:3, :3], q[:3, 3], output_shape=SHAPE, order=1) * 1000.0
        # slice-dependent sampling time of a slow fluctuation
        vol *= 1 + 0.01 * np.sin(2 * np.pi * (t_axis[t] + st[None, None, :]) / 40.0)
        data[..., t] = vol + rng.normal(0, 10, SHAPE) + 5 * slow[t]
    func = folder / "sub-01" / "func"
    func.mkdir(parents=True, exist_ok=True)
    anat = folder / "sub-01" / "anat"
    anat.mkdir(parents=True, exist_ok=True)
    bold = nib.Nifti1Image(data, aff)
    bold.header.set_xyzt_units("mm", "sec")
    bold.header.set_zooms((VOXEL,) * 3 + (tr,))
    nib.save(bold, func / "sub-01_task-bench_bold.nii.gz")
    t1_aff = np.diag([2.0, 2.0, 2.0, 1.0])
    t1_aff[:3, 3] = [-98, -134, -72]
    q = np.linalg.inv(tpl.affine) @ np.linalg.inv(native_from_mni) @ t1_aff
    t1 = ndimage.affine_transform(np.asarray(tpl.dataobj, np.float32), q[:3, :3], q[:3, 3],
                                  output_shape=(99, 117, 95), order=1) * 800
    nib.save(nib.Nifti1Image(t1, t1_aff), anat / "sub-01_T1w.nii.gz")
    meta = {"RepetitionTime": tr, "SliceTiming": st.round(4).tolist(), "SliceEncodingDirection": "k"}
    return {"bold": str(func / "sub-01_task-bench_bold.nii.gz"), "t1w": str(anat / "sub-01_T1w.nii.gz"),
            "metadata": meta, "motion": motion.tolist()}


CHILD_PREPROC = r"""
import json, sys, time, resource
from pathlib import Path
from fmri_pain.bids.runs import Run
from fmri_pain.config.preprocess import PreprocessSpec
from fmri_pain.preprocess import preprocess_subject
info = json.loads(Path(sys.argv[1]).read_text())
run = Run(subject="01", session=None, condition="bench", period=None, task="bench", run=None,
          bold=Path(info["bold"]), events=None, mask=None, confounds=None, metadata=info["metadata"],
          anat=Path(info["t1w"]))
out = Path(sys.argv[2])
t0 = time.perf_counter()
spec = PreprocessSpec(plugin=sys.argv[3], n_procs=int(sys.argv[4]))
(new,) = preprocess_subject([run], out / "derivatives", out / "work", spec)
wall = time.perf_counter() - t0
use = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"wall": wall, "rss_mb": use.ru_maxrss / 1024, "cpu": use.ru_utime + use.ru_stime,
                  "qc": new.metadata["QC"]["metrics"]}))
"""

CHILD_ANTS = r"""
import json, sys, time, resource
import ants
img = ants.image_read(sys.argv[1])
t0 = time.perf_counter()
res = ants.motion_correction(img, type_of_transform="Rigid")
wall = time.perf_counter() - t0
use = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"wall": wall, "rss_mb": use.ru_maxrss / 1024, "cpu": use.ru_utime + use.ru_stime}))
"""


def _child(code: str, *args: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="2", ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS="2")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    sampler = TreeSampler(proc.pid, interval=0.1)
    sampler.start()
    out, err = proc.communicate()
    sampler.stop()
    if proc.returncode != 0:
        raise RuntimeError(err[-3000:])
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = json.loads(out.strip().splitlines()[-1])
    res["tree_cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    res["tree_rss_mb"] = sampler.peak_sum / 2**20
    res["procs"] = sampler.max_procs
    return res


def node_times(work: Path) -> dict[str, float]:
    times = {}
    for rep in work.rglob("_report/report.rst"):
        m = re.search(r"duration\s*:\s*([0-9.]+)", rep.read_text())
        if m:
            times[rep.parent.parent.name] = float(m.group(1))
    return times


def motion_accuracy(info: dict, folder: Path) -> str:
    """Estimated head motion against the simulated truth, in the same frame.

    Volume t shows the tissue of unmoved native point y at ``R_t @ y`` (native world), so the
    true pull matrix from volume 0 to volume t is ``R_t @ inv(R_0)``; the estimate relative to
    volume 0 is ``M_t @ inv(M_0)`` (the reference is the mean, offset from volume 0 by a constant).
    Reports the per-parameter correlation (about the estimate's rotation centre) and the largest
    displacement error over points within 70 mm of the centre.
    """
    from fmri_pain.preprocess.transforms import rigid_params

    (xfm,) = (folder / "out" / "derivatives").rglob("*desc-std2bold_xfm.json")
    rec = json.loads(xfm.read_text())
    est = np.asarray(rec["motion"])
    center = np.asarray(rec["motion_center"])
    true = np.array([rigid(p) for p in info["motion"]])
    true_rel = true @ np.linalg.inv(true[0])
    est_rel = est @ np.linalg.inv(est[0])
    pt, pe = (np.array([rigid_params(m, center) for m in mats]) for mats in (true_rel, est_rel))
    r = [np.corrcoef(pt[:, i], pe[:, i])[0, 1] for i in range(6)]
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(2000, 3))
    pts = center + 70 * pts / np.linalg.norm(pts, axis=1, keepdims=True) * rng.random((2000, 1)) ** (1 / 3)
    homog = np.c_[pts, np.ones(len(pts))].T
    err = max(np.abs((e - t) @ homog)[:3].max() for e, t in zip(est_rel, true_rel))
    return ("motion vs the simulated truth: r (tx ty tz rx ry rz) " + " ".join(f"{v:.4f}" for v in r)
            + f"; largest displacement error within 70 mm of the centre {err:.3f} mm")


def compare(new: Path, old: Path) -> dict[str, float]:
    """Largest absolute differences of the derivatives of two benchmark folders (NaN = n/a equal)."""
    import nibabel as nib
    import pandas as pd

    out = {}
    for kind in ("desc-preproc_bold.nii.gz", "desc-brain_mask.nii.gz", "desc-confounds_timeseries.tsv"):
        (a,) = (new / "out" / "derivatives").rglob(f"*{kind}")
        (b,) = (old / "out" / "derivatives").rglob(f"*{kind}")
        if kind.endswith(".tsv"):
            x, y = (pd.read_csv(f, sep="\t", na_values="n/a") for f in (a, b))
            if list(x.columns) != list(y.columns):
                raise ValueError(f"confound columns differ: {list(x.columns)} vs {list(y.columns)}")
            x, y = x.to_numpy(float), y.to_numpy(float)
            if not np.array_equal(np.isnan(x), np.isnan(y)):
                raise ValueError("confounds: n/a cells differ")
            x, y = np.nan_to_num(x), np.nan_to_num(y)
        else:
            x, y = (np.asarray(nib.load(f).dataobj, dtype=np.float64) for f in (a, b))
        out[kind] = float(np.max(np.abs(x - y))) if x.shape == y.shape else float("inf")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--volumes", type=int, default=200)
    ap.add_argument("--keep", type=Path, default=None, help="keep the data and outputs here")
    ap.add_argument("--no-reference", action="store_true", help="skip antspyx motion_correction (about 2 min)")
    ap.add_argument("--compare", type=Path, default=None,
                    help="an earlier --keep folder: print the max abs difference of the outputs")
    ap.add_argument("--plugin", choices=("Linear", "MultiProc"), default="Linear")
    ap.add_argument("--n-procs", type=int, default=2, help="MultiProc processes (capped by the thread budget)")
    args = ap.parse_args()
    load_start = os.getloadavg()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench_preproc_"))
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    info = make_data(folder / "bids", args.volumes)
    (folder / "info.json").write_text(json.dumps(info))
    print(f"data: {SHAPE} x {args.volumes} volumes at {VOXEL} mm, generated in {time.perf_counter() - t0:.1f} s")
    ours = _child(CHILD_PREPROC, str(folder / "info.json"), str(folder / "out"), args.plugin, str(args.n_procs))
    ref = None if args.no_reference else _child(CHILD_ANTS, info["bold"])
    nodes = node_times(folder / "out" / "work")
    func_total = sum(v for k, v in nodes.items() if k != "anat_norm")
    print("\nper-node wall time (s):")
    for k, v in sorted(nodes.items(), key=lambda kv: -kv[1]):
        print(f"  {k:12s} {v:7.1f}")
    print(f"\n{'':34s}{'wall (s)':>10s}{'CPU (s)':>10s}{'peak RSS (MB)':>16s}{'tree peak (MB)':>16s}")
    print(f"{'fmri-pain preprocess (whole run)':34s}{ours['wall']:10.1f}{ours['tree_cpu']:10.1f}"
          f"{ours['rss_mb']:16.0f}{ours['tree_rss_mb']:16.0f}"
          f"   ({args.plugin}, {ours['procs']} process(es) at most)")
    print(f"{'  of which per-run nodes':34s}{func_total:10.1f}")
    print(f"{'  of which T1w normalization':34s}{nodes.get('anat_norm', float('nan')):10.1f}")
    print(f"{'  sum of node times':34s}{sum(nodes.values()):10.1f}"
          f"   (Linear: wall - sum = Nipype's own time, {ours['wall'] - sum(nodes.values()):.1f} s)")
    if ref is not None:
        print(f"{'ants.motion_correction alone':34s}{ref['wall']:10.1f}{ref['cpu']:10.1f}{ref['rss_mb']:16.0f}")
        print(f"\nratio (ours whole run / antspyx motion correction alone): {ours['wall'] / ref['wall']:.2f}")
    print(f"goal: one run <= 12 s wall -> {'MET' if ours['wall'] <= 12 else 'NOT MET'}; "
          f"peak (tree sum) <= 1 GB -> {'MET' if ours['tree_rss_mb'] <= 1024 else 'NOT MET'}")
    print(f"load average (1, 5, 15 min): start {load_start}, end {os.getloadavg()}")
    print(f"QC: {ours['qc']}")
    print(motion_accuracy(info, folder))
    if args.compare is not None:
        for kind, diff in compare(folder, args.compare).items():
            print(f"max |difference| from {args.compare}: {kind} {diff:.3g}")


if __name__ == "__main__":
    main()
