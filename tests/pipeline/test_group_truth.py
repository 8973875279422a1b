"""End to end on the simulator's ground truth: 8 subjects, participant + group levels.

The ``demo_output`` fixture (conftest) runs the CLI on ``sim_trial``; these
tests compare what it wrote with what the simulator put in.
"""

import nibabel as nib
import numpy as np
import pytest

GROUP = "task-stim_space-MNI152NLin2009aSym"


def _roi(sim, *names):
    mask = None
    for name in names:
        m = np.asanyarray(nib.load(sim.truth_dir / f"roi-{name}_mask.nii.gz").dataobj) > 0
        mask = m if mask is None else mask | m
    return mask


def _map(out, contrast, stat="z", desc=None, folder="group"):
    d = f"_desc-{desc}" if desc else ""
    return np.asanyarray(nib.load(out / folder / f"{GROUP}_contrast-{contrast}{d}_stat-{stat}_statmap.nii.gz").dataobj)


@pytest.mark.parametrize("contrast, rois, sign", [
    ("dualMinusScs", ("pINS_L", "pINS_R"), 1),
    ("dualMinusScs", ("dACC",), 1),
    ("dualMinusDrgs", ("pINS_L", "pINS_R"), 1),
    ("dualMinusDrgs", ("dACC",), 1),
    ("drgsMinusScs", ("S1leg_L",), 1),  # contralateral to pain, all mirrored to the right
    ("drgsMinusScs", ("S2_L", "S2_R"), -1),
])
def test_true_condition_differences_are_detected_with_fdr(demo_output, sim_trial, contrast, rois, sign):
    thresholded = _map(demo_output, contrast, desc="fdr")
    roi = _roi(sim_trial, *rois)
    assert np.sum(sign * thresholded[roi] > 0) >= 1, f"{contrast} not detected in {rois}"


@pytest.mark.parametrize("contrast", ["dualMinusScs", "dualMinusDrgs"])
def test_permutation_fwe_detects_dual_effects_in_insula_and_acc(demo_output, sim_trial, contrast):
    fwe = _map(demo_output, contrast, desc="perm")
    for rois in (("pINS_L", "pINS_R"), ("dACC",)):
        assert np.sum(fwe[_roi(sim_trial, *rois)] > 0) >= 1, f"{contrast} max-t FWE misses {rois}"


def test_control_region_has_no_significant_voxel(demo_output, sim_trial):
    control = _roi(sim_trial, "control")
    for contrast in ("scs", "drgs", "dual", "drgsMinusScs", "dualMinusScs", "dualMinusDrgs",
                     "dualMinusMean"):
        for desc in ("fwe", "perm"):
            assert not np.any(_map(demo_output, contrast, desc=desc)[control]), (contrast, desc)


def test_period_effect_has_the_simulated_sign(demo_output, sim_trial):
    sign = np.sign(sim_trial.truth["period_effect"]["percent_per_period"])
    active = _roi(sim_trial, "pINS_L", "pINS_R", "S2_L", "S2_R", "dACC")
    assert sign * np.mean(_map(demo_output, "periodLinear", stat="t")[active]) > 1.0


def test_paired_route_agrees_with_repeated_measures(demo_output, sim_trial):
    mask = np.asanyarray(nib.load(demo_output / "group" / f"{GROUP}_desc-group_mask.nii.gz").dataobj) > 0
    rm = _map(demo_output, "dualMinusScs", stat="t")
    paired = _map(demo_output, "dualMinusScs", stat="t", desc="paired", folder="group/paired")
    # different estimators (3 vs 2 maps per subject, df 12 vs 6): related, not equal
    assert np.corrcoef(rm[mask], paired[mask])[0, 1] > 0.4
    roi = _roi(sim_trial, "pINS_L", "pINS_R", "dACC")
    assert np.mean(paired[roi]) > 2 and np.mean(rm[roi]) > 2


def test_cluster_tables_label_true_peaks(demo_output):
    import pandas as pd

    table = pd.read_csv(demo_output / "group" / f"{GROUP}_contrast-dual_desc-fdr_clusters.tsv",
                        sep="\t")
    assert not table.empty
    labels = " ".join(map(str, table["harvard_oxford"])) + " ".join(map(str, table["juelich"]))
    assert "Insular" in labels or "operculum" in labels or "Cingulate" in labels


def test_every_statmap_has_a_provenance_sidecar(demo_output):
    import json

    maps = sorted(demo_output.rglob("*_statmap.nii.gz"))
    assert len(maps) > 50
    for path in maps:
        side = json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text())
        assert side["Sources"] and all(s.startswith(("bids:", "file:")) for s in side["Sources"])
        assert all(len(side["SourceChecksums"][s]) == len("sha256:") + 64 for s in side["Sources"])
        assert "nilearn" in side["SoftwareVersions"]
        if path.parts[-2] == "group" or path.parts[-3] == "group":
            # every group map describes its model; its inputs are the dataset's own subject maps
            assert {"StatisticType", "DegreesOfFreedom", "ModelRoute", "NumberOfSubjects",
                    "ContrastWeights"} <= set(side), path.name
            assert all(s.startswith("bids::sub-") for s in side["Sources"]), path.name


def test_dataset_description_lists_the_fmriprep_input(demo_output):
    import json

    desc = json.loads((demo_output / "dataset_description.json").read_text())
    urls = [d["URL"] for d in desc["SourceDatasets"]]
    assert len(urls) == 2 and urls[0].endswith("/bids") and urls[1].endswith("/derivatives/fmriprep")
    # the dataset names of the subject maps' BIDS URIs resolve through DatasetLinks
    side = next(demo_output.glob("sub-01/ses-*/func/*_stat-z_statmap.json"))
    names = {s.split(":")[1] for s in json.loads(side.read_text())["Sources"]}
    assert names and names <= set(desc["DatasetLinks"]) and "raw" in names


def test_citation_files_of_the_demo(demo_output):
    md = (demo_output / "CITATION.md").read_text()
    assert "crossover" in md and "**Permutation inference.**" in md and "**Pathways.**" in md
    bib = (demo_output / "CITATION.bib").read_text()
    assert "@article{nilearn," in bib
