"""The analyst API (fmri_pain.results.api) on a fake output tree with known ground truth."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from nilearn.glm import threshold_stats_img  # noqa: E402
from scipy import ndimage  # noqa: E402

from fmri_pain.results.api import Results, load_results, parse_bids_name  # noqa: E402
from tests.support import fake_outputs as fake  # noqa: E402


GROUP = "task-stim_space-MNI152NLin2009cAsym"
TRIAL_CONTRASTS = ["scs", "drgs", "dual", "drgsMinusScs", "dualMinusScs", "dualMinusDrgs",
                   "dualMinusMean", "conditionF"]


@pytest.fixture(scope="module")
def res(fake_outputs) -> Results:
    return load_results(fake_outputs)


def test_parse_bids_name():
    assert parse_bids_name(f"{GROUP}_contrast-dual_desc-permfwe_stat-logp_statmap.nii.gz") == {
        "task": "stim", "space": "MNI152NLin2009cAsym", "contrast": "dual", "desc": "permfwe",
        "stat": "logp", "suffix": "statmap", "extension": ".nii.gz"}
    assert parse_bids_name("sub-01_ses-scs_task-stim_run-1_design.tsv")["run"] == "1"
    assert parse_bids_name("roi_effects.tsv") is None  # underscores without key-value pairs
    assert parse_bids_name("README") is None


def test_listings(res):
    assert res.subjects == list(fake.SUBJECTS)
    assert res.sessions == ["drgs", "dual", "scs"]
    assert res.conditions == ["SCS", "DRGS", "DUAL"]
    assert res.tasks == ["stim"]
    assert res.group_contrasts == TRIAL_CONTRASTS
    assert res.contrasts == ["stim"] + TRIAL_CONTRASTS
    assert res.subject_contrasts == TRIAL_CONTRASTS[:-1]
    # the drop-out (no DUAL session) has only the contrasts it can have
    dropped = res.maps(level="subject", subject="06")["contrast"].unique()
    assert sorted(dropped) == ["drgs", "drgsMinusScs", "scs"]
    assert res.sessions_of("sub-06") == ["drgs", "scs"]
    summary = res.summary().set_index("contrast")
    assert summary.loc["dual", "n_subjects"] == 5
    assert summary.loc["conditionF", "group_stats"] == "F,z"
    assert "permfwe:logp" in summary.loc["dualMinusScs", "group_thresholded"]
    assert "6 subjects" in repr(res)


def test_map_returns_the_stored_data(res, fake_outputs):
    path = fake_outputs / "group" / f"{GROUP}_contrast-dualMinusScs_stat-t_statmap.nii.gz"
    img = res.map("dualMinusScs", stat="t")
    np.testing.assert_array_equal(img.get_fdata(), nib.load(path).get_fdata())
    sub = res.map("stim", stat="effect", subject="sub-02", session="ses-drgs")
    expected = fake_outputs / "sub-02/ses-drgs/func" / (
        "sub-02_ses-drgs_task-stim_space-MNI152NLin2009cAsym_contrast-stim_stat-effect_statmap.nii.gz")
    np.testing.assert_array_equal(sub.get_fdata(), nib.load(expected).get_fdata())
    assert res.map_path("dual", desc="fdr").name == f"{GROUP}_contrast-dual_desc-fdr_stat-z_statmap.nii.gz"


def test_group_maps_peak_at_the_simulated_blobs(res):
    for contrast, condition in (("scs", "SCS"), ("drgs", "DRGS")):
        img = res.map(contrast)
        data = img.get_fdata()
        peak = nib.affines.apply_affine(img.affine, np.unravel_index(np.argmax(data), data.shape))
        centre = np.asarray(fake.BLOBS[condition][0][0])
        assert np.linalg.norm(peak - centre) <= 12.0, (contrast, peak)


def test_missing_things_raise_keyerror_listing_what_exists(res):
    with pytest.raises(KeyError, match="available:.*dualMinusScs"):
        res.map("painMinusNothing")
    with pytest.raises(KeyError, match=r"'dual' at sub-06.*available: \['scs', 'drgs', 'drgsMinusScs'\]"):
        res.map("dual", subject="06")
    with pytest.raises(KeyError, match="stat=.F.*available:.*stat=t"):
        res.map("dual", stat="F")
    with pytest.raises(KeyError, match="subject '99'"):
        res.map("dual", subject="99")
    with pytest.raises(KeyError, match="stored p maps: none"):
        res.threshold("scs", method="perm")
    with pytest.raises(KeyError, match="roi_effects"):
        res.pathway_table("nonexistent")


def test_fdr_and_fwe_rethreshold_equal_nilearn(res, fake_outputs):
    z_path = fake_outputs / "group" / f"{GROUP}_contrast-dual_stat-z_statmap.nii.gz"
    mask_path = fake_outputs / "group" / f"{GROUP}_desc-brain_mask.nii.gz"
    for method, control in (("fdr", "fdr"), ("fwe", "bonferroni")):
        for alpha in (0.05, 0.01):
            ours, thr = res.threshold("dual", method=method, alpha=alpha)
            ref, ref_thr = threshold_stats_img(str(z_path), mask_img=str(mask_path), alpha=alpha,
                                               height_control=control, two_sided=False)
            assert thr == pytest.approx(ref_thr)
            np.testing.assert_array_equal(ours.get_fdata(), ref.get_fdata())
    # the pipeline's stored FDR map was made the same way: re-thresholding reproduces it
    stored = res.map("dual", desc="fdr").get_fdata()
    np.testing.assert_allclose(res.threshold("dual", "fdr")[0].get_fdata(), stored, atol=1e-6)
    # a stricter alpha keeps a subset
    n05 = np.count_nonzero(res.threshold("dual", "fdr", alpha=0.05)[0].get_fdata())
    n001 = np.count_nonzero(res.threshold("dual", "fdr", alpha=0.01)[0].get_fdata())
    assert 0 < n001 < n05


def test_height_and_cluster_extent(res):
    img, thr = res.threshold("dual", height=3.0, cluster_threshold=10)
    data = img.get_fdata()
    assert thr == 3.0
    kept = data != 0
    assert kept.any() and (data[kept] > 3.0).all()
    labels, n = ndimage.label(kept, structure=np.ones((3, 3, 3)))  # nilearn uses 26-connectivity
    assert n > 0 and np.bincount(labels.ravel())[1:].min() >= 10


def test_permutation_threshold_uses_stored_fwe_map(res):
    img, thr = res.threshold("dualMinusScs", method="perm", alpha=0.05)
    data = img.get_fdata()
    logp = res.map("dualMinusScs", stat="logp", desc="permfwe").get_fdata()
    z = res.map("dualMinusScs").get_fdata()
    expected = (logp > -np.log10(0.05)) & (z > 0)
    assert expected.any()
    np.testing.assert_array_equal(data != 0, expected)
    np.testing.assert_allclose(data[expected], z[expected], rtol=1e-6)
    assert thr == pytest.approx(z[expected].min(), rel=1e-6)


def test_compare(res):
    same = res.compare("dual", "dual")
    assert same["correlation"] == pytest.approx(1.0)
    assert same["dice"] == 1.0 and same["peak_distance_mm"] == 0.0 and same["n_active_a"] > 0
    diff = res.compare("scs", "drgs")
    # SCS (right insula) and DRGS (left S1) blobs are ~90 mm apart and barely overlap
    assert diff["peak_distance_mm"] > 50
    assert diff["dice"] < 0.2 and abs(diff["correlation"]) < 0.5
    dual_scs = res.compare("dual", "scs")  # DUAL contains the SCS blob
    assert dual_scs["dice"] > diff["dice"] + 0.2 and dual_scs["peak_distance_mm"] < 20


def test_tables(res):
    dm = res.design_matrix("01", session="scs")
    assert {"on", "constant"} <= set(dm.columns) and len(dm) == 40
    with pytest.raises(ValueError, match="pass session"):
        res.design_matrix("01")
    assert list(res.group_design_matrix("dual")["subject"]) == [f"sub-{s}" for s in fake.SUBJECTS[:-1]]
    table = res.clusters("dual", desc="fdr")
    assert {"Cluster ID", "X", "Y", "Z", "Peak Stat", "aal"} <= set(table.columns)
    assert table["Peak Stat"].iloc[0] == pytest.approx(res.map("dual").get_fdata().max(), rel=1e-5)
    effects = res.roi_effects()
    assert set(effects["condition"]) == {"SCS", "DRGS", "DUAL"}
    assert res.connectivity_kinds == ["correlation"]
    assert len(res.connectivity()) == len(res.connectivity("correlation")) > 0
    assert "accuracy" in res.decoding().columns and "vas_pain" in res.behaviour().columns
    assert res.roi_stats()["p_fdr"].between(0, 1).all()
    assert [p.name for p in res.reports()][0] == "group.html"
    side = res.provenance("scs", stat="t")
    assert side["NumberOfSubjects"] == 6 and side["DegreesOfFreedom"] == 5
    assert side["StatisticType"] == "t"
    assert res.sidecar(res.output_dir / "group" / "nothing.nii.gz") == {}


def test_plot_and_view(res):
    import matplotlib.pyplot as plt

    display = res.plot("dual", threshold="fdr", kind="glass")
    assert display is not None
    display.close()
    display = res.plot("scs", threshold=3.1, kind="stat", display_mode="z", cut_coords=[12])
    display.close()
    plt.close("all")
    with pytest.raises(ValueError, match="kind"):
        res.plot("dual", kind="surface")
    view = res.view("dual", threshold="fdr")
    html = view.get_standalone()
    assert "<html" in html.lower() and len(html) > 10_000


def test_bad_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_results(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no fmri-pain outputs"):
        load_results(tmp_path)


def test_demo_output_follows_the_contract(demo_output):
    """Whatever ``demo_output`` is (fake tree or ``fmri-pain demo``), the API can walk it."""
    res = load_results(demo_output)
    assert res.subjects and res.group_contrasts
    for contrast in res.group_contrasts:
        img = res.map(contrast)
        assert img.ndim == 3 and np.isfinite(img.get_fdata()).all()
    for subject in res.subjects:
        assert res.maps(level="subject", subject=subject).shape[0] > 0
