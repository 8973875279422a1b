"""The pathway stage on a generic one-condition dataset (no sessions, ON blocks called ``stim``).

A hand-made dataset: 5 subjects, one map each (condition = the task name, as the
layout gives a one-condition study), two nodes, and one small BOLD run per subject
whose events call the ON blocks ``stim``. Run at the default spec (trial conditions,
``on_trial_type: on``), the stage must not crash: one-sample ROI statistics with
n - 1 df, connectivity with the run's single active trial type, and behaviour and
decoding skipped with a stated reason.
"""

from __future__ import annotations

import dataclasses
import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from fmri_pain.bids.runs import Run
from fmri_pain.pathways.atlas import atlas_from_masks
from fmri_pain.pathways.run import run_pathway_analysis
from fmri_pain.report.pathways import pathway_report_section
from fmri_pain.config.pathways import PathwaysSpec
from tests.support.pathways_fixtures import cube_masks

N_SUBJECTS, N_SCANS, TR = 5, 60, 2.0
AFFINE = np.diag([4.0, 4.0, 4.0, 1.0])
CONFOUNDS = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z", "csf", "white_matter"]


def _strict(text: str):
    def refuse(value):
        raise ValueError(f"non-strict JSON constant {value}")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("one_condition")
    rng = np.random.default_rng(4)
    shape = (6, 6, 6)
    masks = cube_masks(root, shape, AFFINE, {"a": np.s_[1:3, 1:3, 1:3], "b": np.s_[3:5, 3:5, 3:5]})
    atlas = atlas_from_masks(masks, {"a": "lateral", "b": "medial"})
    brain = root / "brain_mask.nii.gz"
    nib.save(nib.Nifti1Image(np.ones(shape, np.uint8), AFFINE), brain)
    onsets = np.arange(20.0, N_SCANS * TR - 20, 40.0)
    block = np.zeros(N_SCANS)
    for onset in onsets:
        block[int(onset / TR):int((onset + 20) / TR)] = 1.0
    rows, runs = [], []
    for i in range(N_SUBJECTS):
        sub = f"{i + 1:02d}"
        effect = np.zeros(shape, np.float32)
        effect[np.asarray(nib.load(masks["a"]).dataobj) > 0] = 1.0 + rng.normal(0, 0.3)
        effect[np.asarray(nib.load(masks["b"]).dataobj) > 0] = rng.normal(0, 0.3)
        effect += rng.normal(0, 0.05, shape).astype(np.float32)
        eff, var = root / f"sub-{sub}_effect.nii.gz", root / f"sub-{sub}_variance.nii.gz"
        nib.save(nib.Nifti1Image(effect, AFFINE), eff)
        nib.save(nib.Nifti1Image(np.ones(shape, np.float32), AFFINE), var)
        rows.append({"subject": sub, "contrast": "stim", "effect": str(eff), "variance": str(var),
                     "condition": "stim", "period": None, "sequence": None, "session": None,
                     "age": 30 + i})
        bold = 100 + rng.normal(0, 1, shape + (N_SCANS,))
        bold[np.asarray(nib.load(masks["a"]).dataobj) > 0] += 2.0 * block
        bold_path = root / f"sub-{sub}_task-stim_bold.nii.gz"
        nib.save(nib.Nifti1Image(bold.astype(np.float32), AFFINE), bold_path)
        events = root / f"sub-{sub}_task-stim_events.tsv"
        pd.DataFrame({"onset": onsets, "duration": 20.0, "trial_type": "stim"}).to_csv(
            events, sep="\t", index=False)
        confounds = root / f"sub-{sub}_desc-confounds_timeseries.tsv"
        pd.DataFrame(rng.normal(0, 0.1, (N_SCANS, len(CONFOUNDS))), columns=CONFOUNDS).to_csv(
            confounds, sep="\t", index=False)
        runs.append(Run(subject=sub, session=None, condition="stim", period=None, task="stim", run=1,
                        bold=bold_path, events=events, mask=brain, confounds=confounds,
                        metadata={"RepetitionTime": TR}, sequence=None, covariates={"age": 30 + i}))
    maps = pd.DataFrame(rows)
    out = root / "out"
    outputs = run_pathway_analysis(maps, runs, out, PathwaysSpec(n_permutations=0), atlas=atlas)
    return {"root": root, "maps": maps, "runs": runs, "atlas": atlas, "out": out, "outputs": outputs}


def _read(path):
    return pd.read_csv(path, sep="\t", na_values="n/a")


def test_one_sample_roi_statistics(dataset):
    outputs = dataset["outputs"]
    stats_table = _read(outputs["roi_stats"])
    effects = _read(outputs["roi_effects"])
    assert set(stats_table["contrast"]) == {"stim"}
    assert (stats_table["df"] == N_SUBJECTS - 1).all() and (stats_table["model"] == "ols").all()
    node = stats_table[stats_table["level"] == "node"].set_index("node")
    for name in ("a", "b"):
        values = effects.loc[effects["node"] == name, "effect"].to_numpy()
        ref = stats.ttest_1samp(values, 0.0)
        assert node.loc[name, "estimate"] == pytest.approx(values.mean(), rel=1e-6)
        assert node.loc[name, "stat"] == pytest.approx(ref.statistic, rel=1e-6)
        assert node.loc[name, "p"] == pytest.approx(ref.pvalue, rel=1e-6)
    assert node.loc["a", "p"] < 0.01
    index = stats_table[stats_table["level"] == "index"]
    assert len(index) == 1 and index["estimate"].iloc[0] > 0.5  # lateral a minus medial b
    sidecar = _strict(outputs["roi_stats"].with_suffix(".json").read_text())
    assert "one-sample t test" in sidecar["Description"] and "df" in sidecar


def test_connectivity_uses_the_single_active_trial_type(dataset):
    outputs = dataset["outputs"]
    ppi = _read(outputs["connectivity_ppi_stats"])
    assert set(ppi["contrast"]) == {"stim"} and (ppi["df"] == N_SUBJECTS - 1).all()
    sidecar = _strict(outputs["connectivity_ppi_stats"].with_suffix(".json").read_text())
    assert sidecar["OnTrialType"] == ["stim"]
    corr = _read(outputs["connectivity_correlation_stats"])
    assert set(corr["contrast"]) == {"stim"} and (corr["df"] == N_SUBJECTS - 1).all()


def test_skipped_parts_are_stated(dataset):
    outputs = dataset["outputs"]
    skipped = _read(outputs["skipped"]).set_index("part")["reason"]
    assert set(skipped.index) == {"behaviour", "decoding"}
    assert "pain_relief" in skipped["behaviour"] and "one condition (stim)" in skipped["decoding"]
    assert "behaviour" not in outputs and "decoding" not in outputs
    html = pathway_report_section(outputs)
    assert "Not computed" in html and "one-sample t test" in html and "crossover" not in html
    assert "each node of the given atlas" in _strict(
        outputs["roi_effects"].with_suffix(".json").read_text())["Description"]
    for path in dataset["out"].rglob("*.json"):
        _strict(path.read_text())


def test_unresolvable_on_trial_type_skips_connectivity(dataset, caplog):
    """Two active trial types and no ``on``: connectivity is skipped with the reason; stale tables go."""
    runs = []
    for run in dataset["runs"]:
        events = dataset["root"] / f"sub-{run.subject}_two_events.tsv"
        pd.DataFrame({"onset": [20.0, 60.0], "duration": 20.0, "trial_type": ["stim", "other"]}).to_csv(
            events, sep="\t", index=False)
        runs.append(dataclasses.replace(run, events=events))
    out = dataset["root"] / "out"  # the same folder: the first run's connectivity tables are stale
    with caplog.at_level("WARNING"):
        outputs = run_pathway_analysis(dataset["maps"], runs, out, PathwaysSpec(n_permutations=0),
                                       atlas=dataset["atlas"])
    skipped = _read(outputs["skipped"]).set_index("part")["reason"]
    assert "connectivity" in skipped.index and "'other'" in skipped["connectivity"]
    assert "sub-01" in skipped["connectivity"]
    assert not list((out / "group" / "pathways").glob("connectivity_*"))
    assert any("connectivity not computed" in r.getMessage() for r in caplog.records)
    assert "roi_stats" in outputs
