"""Write the notebooks of this folder from the cell sources below (stored without outputs).

Run ``python notebooks/_build.py`` after editing; ``tests/test_notebooks.py``
checks that the stored notebooks equal what this script writes and executes
them against demo outputs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
KERNEL = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}

SETUP = '''\
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display

from fmri_pain.results import load_results

# The results folder: set FMRI_PAIN_RESULTS, or run `fmri-pain demo ../demo-output` first.
RESULTS = Path(os.environ.get("FMRI_PAIN_RESULTS", "../demo-output"))
res = load_results(RESULTS)
res'''

EXPLORE = [
    new_markdown_cell("""\
# 01 - Explore the contrasts

Opens an fmri-pain output folder with the analyst API (`fmri_pain.load_results`), walks through
every group contrast (glass brains, cluster tables with atlas labels), opens an interactive
viewer, re-thresholds on the fly (FDR / Bonferroni / permutation maps where the pipeline wrote
them) and compares contrasts. Nothing is re-computed: everything is read from the outputs.

Set `FMRI_PAIN_RESULTS` to your output folder (default `../demo-output`, written by
`fmri-pain demo ../demo-output`)."""),
    new_code_cell(SETUP),
    new_markdown_cell("## What is there\nSubjects, sessions, conditions and, per contrast, which maps exist."),
    new_code_cell('''\
print("subjects:  ", res.subjects)
print("sessions:  ", res.sessions)
print("conditions:", res.conditions)
print("contrasts: ", res.group_contrasts)
res.summary()'''),
    new_markdown_cell("""\
## Each group contrast
Glass brain of the stored z map at the FDR threshold (q < 0.05), and the stored cluster table
(nilearn `get_clusters_table` plus the atlas label columns) when the pipeline wrote one."""),
    new_code_cell('''\
for contrast in res.group_contrasts:
    img, thr = res.threshold(contrast, method="fdr", alpha=0.05)
    n_vox = int(np.count_nonzero(img.get_fdata()))
    print(f"{contrast}: FDR q<0.05 threshold z={thr:.2f}, {n_vox} voxels")
    fig = plt.figure(figsize=(8, 3))
    res.plot(contrast, threshold="fdr", kind="glass", figure=fig)
    plt.show()
    if contrast in res.files.loc[res.files["suffix"] == "clusters", "contrast"].values:
        try:
            display(res.clusters(contrast, desc="fdr").head(10))
        except KeyError as err:
            print(err)'''),
    new_markdown_cell("## Interactive viewer\n`view_img` of one contrast (drag the cursor in the notebook)."),
    new_code_cell('''\
contrast = "dualMinusScs" if "dualMinusScs" in res.group_contrasts else res.group_contrasts[0]
res.view(contrast, threshold=3.1)'''),
    new_markdown_cell("""\
## Re-threshold on the fly
With ipywidgets installed this gives sliders for the method, alpha and cluster extent;
without them it prints one threshold per method."""),
    new_code_cell('''\
def show(method="fdr", alpha=0.05, cluster_threshold=0):
    try:
        img, thr = res.threshold(contrast, method=method, alpha=alpha, cluster_threshold=cluster_threshold)
    except KeyError as err:  # e.g. no permutation maps for this contrast
        print(err)
        return
    n_vox = int(np.count_nonzero(img.get_fdata()))
    print(f"{contrast} {method} alpha={alpha}: z > {thr:.2f}, {n_vox} voxels")
    if n_vox:
        res.plot(contrast, threshold=method, alpha=alpha, kind="glass", display_mode="lyrz")
        plt.show()

stored = res.maps(level="group", contrast=contrast)
p_descs = stored.loc[stored["stat"].isin(["logp", "logpfwe", "p", "pfwe"]), "desc"].dropna()
methods = ["fdr", "fwe", "none"] + sorted({"perm" if d.startswith("perm") else d for d in p_descs})
try:
    import ipywidgets as widgets
    widgets.interact(show, method=methods,
                     alpha=widgets.FloatLogSlider(value=0.05, base=10, min=-4, max=-1, step=0.25),
                     cluster_threshold=widgets.IntSlider(value=0, min=0, max=50, step=5))
except ImportError:
    for method in methods:
        show(method)'''),
    new_markdown_cell("## Compare two contrasts\n"
                      "Spatial correlation, Dice of the suprathreshold voxels (z > 3.1) and peak distance."),
    new_code_cell('''\
pairs = [(a, b) for a, b in [("scs", "drgs"), ("scs", "dual"), ("drgs", "dual")]
         if a in res.group_contrasts and b in res.group_contrasts]
pd.DataFrame([{"a": a, "b": b, **res.compare(a, b, threshold=3.1)} for a, b in pairs])'''),
    new_markdown_cell("## A subject: design matrix and maps"),
    new_code_cell('''\
from nilearn.plotting import plot_design_matrix

subject = res.subjects[0]
session = res.sessions_of(subject)[0] if res.sessions_of(subject) else None
dm = res.design_matrix(subject, session=session)
plot_design_matrix(dm)
plt.show()
subject_contrast = res.maps(level="subject", subject=subject, stat="z")["contrast"].iloc[0]
res.plot(subject_contrast, subject=subject, threshold=3.1, display_mode="z", cut_coords=5)
plt.show()'''),
    new_markdown_cell("## Provenance\nEvery map has a JSON sidecar with its inputs, parameters and software versions."),
    new_code_cell('''\
side = res.provenance(contrast)
{k: side[k] for k in ("Parameters", "SoftwareVersions") if k in side}'''),
]

PATHWAYS = [
    new_markdown_cell("""\
# 02 - Pain pathways

ROI effects per condition in the lateral (sensory-discriminative), medial (affective) and
descending pathways, forest plots of the group estimates, condition-dependent connectivity and
brain-behaviour relations, all read from `group/pathways/`."""),
    new_code_cell(SETUP + "\nprint(res.pathway_tables)"),
    new_markdown_cell("## ROI effects per condition"),
    new_code_cell('''\
effects = res.roi_effects()
value = next(c for c in ("effect", "beta", "estimate", "value") if c in effects.columns)
node = next(c for c in ("roi", "node", "name") if c in effects.columns)
summary = effects.groupby([node, "condition"])[value].agg(["mean", "sem", "count"]).reset_index()
display_order = [c for c in res.conditions if c in set(summary["condition"])]
pivot = summary.pivot(index=node, columns="condition", values="mean")[display_order]
ax = pivot.plot.barh(figsize=(6, 0.45 * len(pivot) + 1),
                     xerr=summary.pivot(index=node, columns="condition", values="sem")[display_order])
ax.axvline(0, color="k", lw=0.8)
ax.set_xlabel(f"mean {value} (± s.e.m.)")
plt.tight_layout()
plt.show()
summary.head(12)'''),
    new_markdown_cell("## Forest plot of the group estimates\n"
                      "One panel per contrast: estimate and confidence interval per node."),
    new_code_cell('''\
stats = res.roi_stats()
est = next(c for c in ("estimate", "beta", "coef", "effect", "mean") if c in stats.columns)
if {"ci_low", "ci_high"} <= set(stats.columns):
    low, high = stats["ci_low"], stats["ci_high"]
elif "se" in stats.columns:
    low, high = stats[est] - 1.96 * stats["se"], stats[est] + 1.96 * stats["se"]
else:
    low = high = stats[est]
stats = stats.assign(_low=low, _high=high)
node = next(c for c in ("roi", "node", "name") if c in stats.columns)
by = "contrast" if "contrast" in stats.columns else None
groups = list(stats.groupby(by)) if by else [("all", stats)]
fig, axes = plt.subplots(1, len(groups), figsize=(3.2 * len(groups), 0.35 * stats[node].nunique() + 1.5),
                         sharey=True, squeeze=False)
for ax, (name, df) in zip(axes[0], groups):
    y = np.arange(len(df))
    ax.errorbar(df[est], y, xerr=[df[est] - df["_low"], df["_high"] - df[est]], fmt="o", capsize=3)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(y, df[node])
    ax.set_title(str(name))
plt.tight_layout()
plt.show()
p_col = next((c for c in ("p_fdr", "q", "p") if c in stats.columns), None)
stats.sort_values(p_col).head(10) if p_col else stats.head(10)'''),
    new_markdown_cell("## Connectivity per condition\n"
                      "Mean connectivity between nodes in each condition, for every kind the pipeline wrote."),
    new_code_cell('''\
for kind in res.connectivity_kinds:
    conn = res.connectivity(kind)
    print(kind, conn.shape, list(conn.columns))
    pair = [c for c in conn.columns if c in ("roi_a", "roi_b", "seed", "target", "source")]
    numeric = [c for c in conn.select_dtypes("number").columns if c not in ("period", "run")]
    if len(pair) == 2 and "condition" in conn.columns and numeric:
        value = numeric[-1]
        conds = [c for c in res.conditions if c in set(conn["condition"])]
        fig, axes = plt.subplots(1, len(conds), figsize=(4 * len(conds), 3.6), squeeze=False)
        for ax, cond in zip(axes[0], conds):
            m = conn[conn["condition"] == cond].groupby(pair)[value].mean().unstack()
            im = ax.imshow(m.to_numpy(dtype=float), cmap="RdBu_r", vmin=-1, vmax=1)
            ax.set_xticks(range(m.shape[1]), m.columns, rotation=90, fontsize=7)
            ax.set_yticks(range(m.shape[0]), m.index, fontsize=7)
            ax.set_title(f"{kind}: {cond}")
        fig.colorbar(im, ax=axes[0].tolist(), shrink=0.7, label=value)
        plt.show()
    else:
        display(conn.head())'''),
    new_markdown_cell("## Brain-behaviour\n"
                      "Correlation of node effects with the clinical measures per session (e.g. pain relief)."),
    new_code_cell('''\
if "behaviour" in res.pathway_tables:
    beh = res.behaviour()
    display(beh.head())
    clinical = [c for c in ("pain_relief", "vas_pain", "stim_amplitude_ma") if c in beh.columns]
    nodes = [c for c in beh.select_dtypes("number").columns if c not in clinical + ["period", "subject"]]
    if clinical and nodes:
        corr = beh[nodes + clinical].corr().loc[nodes, clinical]
        display(corr.round(2))
        x, y = clinical[0], corr[clinical[0]].abs().idxmax()
        ax = beh.plot.scatter(x=x, y=y, c=beh["condition"].astype("category").cat.codes
                              if "condition" in beh else None, colormap="viridis", figsize=(4, 3.5))
        ax.set_title(f"{y} vs {x}")
        plt.show()
if "decoding" in res.pathway_tables:
    display(res.decoding())'''),
]

CLUSTER = [
    new_markdown_cell("""\
# 03 - Run the participant level on a cluster

The participant level is one task per subject; fmri-pain hands these tasks to dask. The
scheduler is chosen in the analysis spec (`execution.scheduler`): `local` (a dask
`LocalCluster` on this machine, the default), `none` (serial), `slurm` / `pbs` / `sge`
(dask-jobqueue submits worker jobs) or the address of a running scheduler (`tcp://host:8786`).

This notebook simulates a tiny dataset (one subject) and runs the participant level on a local
dask cluster. Set `FMRI_PAIN_NOTEBOOK_QUICK=0` to simulate 3 subjects instead."""),
    new_code_cell('''\
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

QUICK = os.environ.get("FMRI_PAIN_NOTEBOOK_QUICK", "1") == "1"
WORK = Path(os.environ.get("FMRI_PAIN_NOTEBOOK_WORK") or tempfile.mkdtemp(prefix="fmri-pain-nb03-"))
# the fmri-pain command of the Python running this notebook (its entry point, else the module)
_exe = shutil.which("fmri-pain", path=str(Path(sys.executable).parent))
FMRI_PAIN = [_exe] if _exe else [sys.executable, "-m", "fmri_pain.cli"]
print(WORK, FMRI_PAIN)'''),
    new_markdown_cell("## A tiny simulated trial\n"
                      "(`fmri_pain.simulate` writes raw BIDS, fMRIPrep-style derivatives and the ground truth.)"),
    new_code_cell('''\
from fmri_pain.simulate import simulate_trial

n_subjects = 1 if QUICK else 3
sim = simulate_trial(WORK / "sim", n_subjects=n_subjects, n_volumes=40, raw=True, derivatives=True)
bids_dir, deriv_dir = WORK / "sim" / "bids", WORK / "sim" / "derivatives" / "fmriprep"
sorted(p.name for p in bids_dir.iterdir())'''),
    new_markdown_cell("""\
## The analysis spec
Only what differs from the defaults (`python -m fmri_pain.config.docs` prints every key):
here a local dask cluster with 2 single-threaded workers, and fewer permutations."""),
    new_code_cell('''\
spec = {
    "execution": {"scheduler": "local", "n_workers": 2, "threads_per_worker": 1, "memory_per_worker": "4GiB"},
    "inference": {"n_perm": 100},
}
spec_file = WORK / "spec.yaml"
spec_file.write_text(yaml.safe_dump(spec))
from fmri_pain.config.spec import load_spec
load_spec(spec_file).execution'''),
    new_markdown_cell("## Participant level on the local dask cluster"),
    new_code_cell('''\
out_dir = WORK / "out"
cmd = FMRI_PAIN + [str(bids_dir), str(out_dir), "participant",
       "--derivatives", str(deriv_dir), "--spec", str(spec_file)]
print(" ".join(cmd))
run = subprocess.run(cmd, capture_output=True, text=True)
print(run.stdout[-3000:], run.stderr[-3000:])
run.check_returncode()'''),
    new_code_cell('''\
from fmri_pain.results import load_results

res = load_results(out_dir)
print(res)
res.maps(level="subject").head()'''),
    new_markdown_cell("""\
## The same on SLURM
Only the spec changes. dask-jobqueue submits worker jobs with `sbatch`; the workers connect back
to the scheduler that `fmri-pain` starts on the login node. With the container, the workers run
inside the image through `worker_python`:

```yaml
execution:
  scheduler: slurm
  queue: normal
  account: my_project
  walltime: "02:00:00"
  job_cores: 1
  job_memory: 8GiB
  max_jobs: 20
  worker_python: apptainer exec --bind /data,/scratch fmri-pain.sif python
```

PBS and SGE are the same with `scheduler: pbs` / `sge`. The cell below writes the spec and submits
only where `sbatch` exists and `FMRI_PAIN_NOTEBOOK_SLURM=1` is set; otherwise it prints the command."""),
    new_code_cell('''\
slurm_spec = {
    "execution": {"scheduler": "slurm", "queue": os.environ.get("SLURM_QUEUE", "debug"),
                  "walltime": "00:30:00", "job_cores": 1, "job_memory": "4GiB", "max_jobs": 4},
}
slurm_file = WORK / "spec-slurm.yaml"
slurm_file.write_text(yaml.safe_dump(slurm_spec))
load_spec(slurm_file)  # validated like any spec
slurm_cmd = FMRI_PAIN + [str(bids_dir), str(WORK / "out-slurm"), "participant",
             "--derivatives", str(deriv_dir), "--spec", str(slurm_file)]
print(" ".join(slurm_cmd))
if shutil.which("sbatch") and os.environ.get("FMRI_PAIN_NOTEBOOK_SLURM") == "1":
    subprocess.run(slurm_cmd, check=True)'''),
]

NOTEBOOKS = {
    "01_explore_contrasts.ipynb": EXPLORE,
    "02_pathways.ipynb": PATHWAYS,
    "03_run_on_a_cluster.ipynb": CLUSTER,
}


def build(name: str) -> nbformat.NotebookNode:
    """The notebook ``name`` (no outputs, fixed metadata)."""
    cells = [nbformat.from_dict(dict(c)) for c in NOTEBOOKS[name]]
    for i, cell in enumerate(cells):
        cell["id"] = f"cell-{i:02d}"
    nb = new_notebook(cells=cells, metadata={"kernelspec": KERNEL,
                                             "language_info": {"name": "python"}})
    nbformat.validate(nb)
    return nb


def main(folder: Path = HERE) -> int:
    for name in NOTEBOOKS:
        nbformat.write(build(name), folder / name)
        print(f"wrote {folder / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
