"""First level: agreement with nilearn, fixed effects, signed contrasts, censoring, outputs."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from fmri_pain.errors import InputError
from fmri_pain.glm.first_level.confounds import load_run_confounds
from fmri_pain.glm.first_level.events import read_events, stim_weights
from fmri_pain.glm.first_level.fixed_effects import fixed_effects, linear_combination
from fmri_pain.glm.first_level.model import ar1_glm
from fmri_pain.glm.first_level.subject import first_level_subject
from fmri_pain.pipeline.participant import first_level_settings
from fmri_pain.bids.runs import Run
from fmri_pain.simulate.confounds import motion_expansion
from fmri_pain.config.events import EventsSpec
from fmri_pain.config.spec import load_spec, spec_from_dict

HAXBY = Path(__file__).resolve().parents[4] / "shared" / "data" / "haxby2001" / "sub001"
TR = 2.0
N_SCANS = 80
SHAPE = (10, 12, 10)
SPIKES = (30, 55)  # FD > 0.5 at these volumes (segments between stay >= 5 volumes)


def _write_run(folder: Path, subject: str, session: str | None, seed: int,
               amplitude: float = 3.0, n: int = N_SCANS) -> Run:
    """A small fMRIPrep-style run: 4 mm voxels, an active box, AR noise, motion, FD spikes."""
    from nilearn.glm.first_level import make_first_level_design_matrix

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    ses = f"_ses-{session}" if session else ""
    stem = f"sub-{subject}{ses}_task-stim_run-1"
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    affine[:3, 3] = [-20, -24, -20]
    mask = np.zeros(SHAPE, dtype=bool)
    mask[1:-1, 1:-1, 1:-1] = True
    events = pd.DataFrame({"onset": [10.0, 50, 90, 130, 25, 105], "duration": [20.0] * 4 + [2.0] * 2,
                           "trial_type": ["on"] * 4 + ["rating"] * 2})
    events.to_csv(folder / f"{stem}_events.tsv", sep="\t", index=False)
    reg = make_first_level_design_matrix(np.arange(n) * TR, events, hrf_model="spm", drift_model=None)
    active = np.zeros(SHAPE)
    active[2:5, 2:6, 2:5] = 1
    noise = np.zeros(SHAPE)
    data = np.empty((*SHAPE, n), dtype=np.float32)
    for t in range(n):
        noise = 0.4 * noise + rng.standard_normal(SHAPE) * 8
        data[..., t] = 800 * mask + 20 + amplitude * 10 * active * reg["on"].iloc[t] \
            + 5 * reg["rating"].iloc[t] + noise * mask + 0.05 * t
    bold = folder / f"{stem}_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz"
    nib.Nifti1Image(data, affine).to_filename(bold)
    mask_path = folder / f"{stem}_space-MNI152NLin2009cAsym_desc-brain_mask.nii.gz"
    nib.Nifti1Image(mask.astype(np.uint8), affine).to_filename(mask_path)
    motion = rng.standard_normal((n, 6)).cumsum(0) * 0.01
    cols = motion_expansion(motion)  # the simulator's truth, not the analysis' own expansion
    fd = np.abs(rng.standard_normal(n)) * 0.05
    fd[list(SPIKES)] = 0.8
    fd[0] = np.nan
    cols["framewise_displacement"] = fd
    cols["std_dvars"] = np.r_[np.nan, 1 + 0.05 * rng.standard_normal(n - 1)]
    for k in range(2):
        cols[f"cosine{k:02d}"] = np.cos(np.pi * (np.arange(n) + 0.5) * (k + 1) / n)
    confounds = folder / f"{stem}_desc-confounds_timeseries.tsv"
    pd.DataFrame(cols).to_csv(confounds, sep="\t", index=False, na_rep="n/a")
    condition = {"scs": "SCS", "drgs": "DRGS", "dual": "DUAL"}.get(session or "", "stim")
    period = {"scs": 1, "drgs": 2, "dual": 3}.get(session or "")
    return Run(subject=subject, session=session, condition=condition, period=period, task="stim",
               run=1, bold=bold, events=folder / f"{stem}_events.tsv", mask=mask_path,
               confounds=confounds, metadata={"RepetitionTime": TR})


@pytest.fixture(scope="module")
def run01(tmp_path_factory) -> Run:
    return _write_run(tmp_path_factory.mktemp("raw") / "sub-01" / "func", "01", None, seed=1)


def _masked(path, mask) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)[mask]


# ----------------------------------------------------------------------------- arrays
def test_ar1_glm_matches_nilearn_run_glm():
    from nilearn.glm.contrasts import compute_contrast
    from nilearn.glm.first_level import run_glm

    rng = np.random.default_rng(0)
    n, v = 90, 600
    X = np.c_[np.sin(np.arange(n) / 5), rng.standard_normal((n, 3)), np.ones(n)]
    Y = np.empty((n, v))
    e = rng.standard_normal((n, v))
    rho = np.linspace(-0.3, 0.7, v)
    Y[0] = e[0]
    for t in range(1, n):
        Y[t] = rho * Y[t - 1] + e[t]
    Y += X @ rng.standard_normal((5, v))
    con = np.array([1.0, -1.0, 0, 0, 0])
    labels, results = run_glm(Y, X, noise_model="ar1")
    ref = compute_contrast(labels, results, con)
    ours = ar1_glm(Y, X, dtype=np.float64).contrast(con)
    assert len(results) > 20  # many AR bins really used
    np.testing.assert_allclose(ours.effect, ref.effect_size().ravel(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours.variance, ref.effect_variance().ravel(), rtol=1e-9)
    np.testing.assert_allclose(ours.z, ref.z_score().ravel(), rtol=1e-7, atol=1e-9)
    fast = ar1_glm(Y.astype(np.float32), X).contrast(con)  # default float32 products
    assert np.corrcoef(fast.z, ref.z_score().ravel())[0, 1] > 0.9999
    np.testing.assert_allclose(fast.effect, ref.effect_size().ravel(), rtol=1e-3, atol=1e-4)
    ols = ar1_glm(Y, X, noise_model="ols", dtype=np.float64).contrast(con)
    labels, results = run_glm(Y, X, noise_model="ols")
    np.testing.assert_allclose(ols.z, compute_contrast(labels, results, con).z_score().ravel(),
                               rtol=1e-7, atol=1e-9)


def test_fixed_effects_match_nilearn():
    from nilearn.glm.contrasts import compute_fixed_effects

    rng = np.random.default_rng(2)
    shape = (4, 5, 3)
    effects = [rng.standard_normal(shape) for _ in range(3)]
    variances = [rng.uniform(0.5, 2.0, shape) for _ in range(3)]
    affine = np.eye(4)
    mask = nib.Nifti1Image(np.ones(shape, dtype=np.int8), affine)
    dofs = [50, 60, 70]
    ref = compute_fixed_effects([nib.Nifti1Image(e, affine) for e in effects],
                                [nib.Nifti1Image(v, affine) for v in variances],
                                mask=mask, precision_weighted=True, dofs=dofs)
    ours = fixed_effects([e.ravel() for e in effects], [v.ravel() for v in variances], dofs=dofs)
    np.testing.assert_allclose(ours.effect, ref[0].get_fdata().ravel())
    np.testing.assert_allclose(ours.variance, ref[1].get_fdata().ravel())
    np.testing.assert_allclose(ours.z, ref[3].get_fdata().ravel(), rtol=1e-6)
    assert ours.dof == 180


def test_signed_contrast_subtracts_and_adds_variances():
    effects = {"SCS": np.array([1.0, 2.0]), "DRGS": np.array([3.0, -1.0]), "DUAL": np.array([5.0, 0.5])}
    variances = {"SCS": np.array([0.5, 1.0]), "DRGS": np.array([2.0, 0.25]), "DUAL": np.array([1.0, 4.0])}
    diff = linear_combination(effects, variances, {"DUAL": 1.0, "SCS": -1.0})
    np.testing.assert_allclose(diff.effect, [4.0, -1.5])  # a negative weight subtracts
    np.testing.assert_allclose(diff.variance, [1.5, 5.0])  # variances add
    mean = linear_combination(effects, variances, {"SCS": -0.5, "DRGS": -0.5, "DUAL": 1.0})
    np.testing.assert_allclose(mean.effect, [5.0 - 2.0, 0.5 - 0.5])
    np.testing.assert_allclose(mean.variance, [1.0 + 0.25 * 0.5 + 0.25 * 2.0, 4.0 + 0.25 + 0.0625])
    assert np.all(np.sign(diff.z) == np.sign(diff.effect))
    with pytest.raises(KeyError):
        linear_combination(effects, variances, {"DUAL": 1.0, "OTHER": -1.0})


def test_stim_weights_on_off_and_one_condition_fallback():
    assert stim_weights(["on", "rating"], EventsSpec()) == {"on": 1.0}
    assert stim_weights(["on", "off"], EventsSpec(off_trial_type="off")) == {"on": 1.0, "off": -1.0}
    assert stim_weights(["active", "rest"], EventsSpec()) == {"active": 1.0, "rest": -1.0}


# ----------------------------------------------------------------------------- one run vs nilearn
def test_first_level_run_matches_nilearn_and_censors(run01, tmp_path):
    from nilearn.glm.first_level import FirstLevelModel

    # explicit motion24 (the default ``auto`` takes motion6 on this short run: see
    # test_first_level_nuisance.py); the TSV's cosines are not loaded, the spec's drift is the basis
    spec = spec_from_dict({"first_level": {"confounds": {"strategy": "motion24"}}})
    out = first_level_subject([run01], first_level_settings(spec), tmp_path)
    confounds, sample_mask = load_run_confounds(run01, spec.first_level.confounds, N_SCANS)
    assert sample_mask is not None and not set(SPIKES) & set(sample_mask)
    assert confounds.shape[1] == 24 and not any(c.startswith("cosine") for c in confounds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = FirstLevelModel(t_r=TR, hrf_model="spm", noise_model="ar1", drift_model="cosine",
                                high_pass=1 / 128, smoothing_fwhm=6.0, mask_img=str(run01.mask))
        model.fit(str(run01.bold), events=read_events(run01.events), confounds=confounds,
                  sample_masks=sample_mask)
        ref = model.compute_contrast("on", output_type="all")
    mask = np.asarray(nib.load(run01.mask).dataobj) > 0
    rows = out.maps.set_index(["contrast", "stat"])["path"]
    z = _masked(rows["stim", "z"], mask)
    z_ref = ref["z_score"].get_fdata()[mask]
    assert np.corrcoef(z, z_ref)[0, 1] >= 0.999
    np.testing.assert_allclose(_masked(rows["stim", "effect"], mask),
                               ref["effect_size"].get_fdata()[mask], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(_masked(rows["stim", "variance"], mask),
                               ref["effect_variance"].get_fdata()[mask], rtol=1e-3, atol=1e-5)
    # the active box is found
    zmap = np.asarray(nib.load(rows["stim", "z"]).dataobj)
    assert zmap[2:5, 2:6, 2:5].mean() > 3 and abs(zmap[6:9, 7:11, 6:9].mean()) < 2

    # censoring: FD spikes removed from the design actually fitted
    design_tsv = [p for p in out.design_files if p.suffix == ".tsv"][0]
    design = pd.read_csv(design_tsv, sep="\t")
    assert len(design) == len(sample_mask) <= N_SCANS - len(SPIKES)
    assert not set(np.asarray(SPIKES) * TR) & set(design["frame_time"])
    assert out.qc["n_censored"].iloc[0] == N_SCANS - len(sample_mask)
    assert any(p.suffix == ".png" and p.exists() for p in out.design_files)
    sidecar = json.loads(Path(str(rows["stim", "z"]).replace(".nii.gz", ".json")).read_text())
    assert {s.rsplit("_", 1)[1] for s in sidecar["Sources"]} == {
        "bold.nii.gz", "events.tsv", "timeseries.tsv", "mask.nii.gz"}
    assert all(s.startswith("bids:") or s.startswith("file:") for s in sidecar["Sources"])
    assert set(sidecar["SourceChecksums"]) == set(sidecar["Sources"])
    assert sidecar["Parameters"]["first_level"]["hrf_model"] == "spm"


def test_spec_contrast_expression_written_under_its_name(run01, tmp_path):
    spec = spec_from_dict({"first_level": {"contrasts": {"onMinusRating": "on - rating"},
                                           "confounds": {"scrub": False}}})
    out = first_level_subject([run01], first_level_settings(spec), tmp_path, write_design_png=False)
    rows = out.maps.set_index(["contrast", "stat"])["path"]
    mask = np.asarray(nib.load(run01.mask).dataobj) > 0
    stim = _masked(rows["stim", "effect"], mask)
    diff = _masked(rows["onMinusRating", "effect"], mask)
    assert Path(rows["onMinusRating", "z"]).name == \
        "sub-01_task-stim_space-MNI152NLin2009cAsym_contrast-onMinusRating_stat-z_statmap.nii.gz"
    assert not np.allclose(stim, diff)  # rating's effect really subtracted
    assert out.qc["n_censored"].iloc[0] == 0


# ----------------------------------------------------------------------------- trial subject
def test_subject_with_missing_session_gets_supported_contrasts(tmp_path):
    runs = [_write_run(tmp_path / "raw" / f"ses-{s}", "02", s, seed=i, amplitude=a)
            for i, (s, a) in enumerate([("scs", 2.0), ("dual", 4.0)])]
    out = first_level_subject(runs, first_level_settings(load_spec(None)), tmp_path / "out",
                              write_design_png=False)
    contrasts = set(out.maps["contrast"])
    assert {"stim", "scs", "dual", "dualMinusScs"} <= contrasts
    assert not contrasts & {"drgs", "drgsMinusScs", "dualMinusDrgs", "dualMinusMean", "conditionF"}
    rows = out.maps[out.maps["level"] != "session"].set_index(["contrast", "stat"])
    assert rows.loc[("dualMinusScs", "z"), "path"].parent == tmp_path / "out" / "sub-02" / "func"
    session_z = out.maps.query("contrast == 'stim' and stat == 'z'")
    assert sorted(session_z["session"]) == ["dual", "scs"]
    assert all(f"ses-{s}" in str(p) for s, p in zip(session_z["session"], session_z["path"]))
    mask = np.asarray(nib.load(runs[0].mask).dataobj) > 0
    get = {k: _masked(rows.loc[k, "path"], mask) for k in rows.index}
    np.testing.assert_allclose(get["dualMinusScs", "effect"],
                               get["dual", "effect"] - get["scs", "effect"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(get["dualMinusScs", "variance"],
                               get["dual", "variance"] + get["scs", "variance"], rtol=1e-5, atol=1e-8)
    box = np.zeros(SHAPE, dtype=bool)
    box[2:5, 2:6, 2:5] = True
    assert _masked(rows.loc[("dualMinusScs", "effect"), "path"], box).mean() > 0  # DUAL simulated stronger
    assert rows.loc[("scs", "z"), "period"] == 1 and rows.loc[("dual", "z"), "condition"] == "DUAL"


# ----------------------------------------------------------------------------- errors and real data
def test_unreadable_bold_names_subject_and_file(run01, tmp_path):
    empty = tmp_path / "sub-09_task-stim_bold.nii.gz"
    empty.write_bytes(b"")
    bad = Run(**{**run01.__dict__, "subject": "09", "bold": empty})
    with pytest.raises(InputError) as err:
        first_level_subject([bad], first_level_settings(load_spec(None)), tmp_path / "out")
    assert err.value.subject == "09" and "sub-09" in str(err.value)
    assert "bold" in str(err.value)


@pytest.mark.skipif(not HAXBY.exists(), reason="haxby2001 data not available")
def test_haxby_one_condition_real_events(tmp_path):
    folder = HAXBY / "BOLD" / "task001_run001"
    events = pd.read_csv(folder / "bold_events.tsv", sep="\t")
    events.to_csv(tmp_path / "events.tsv", sep="\t", index=False)
    run = Run(subject="haxby", session=None, condition="objects", period=None, task="objects",
              run=1, bold=folder / "bold_25mm.nii.gz", events=tmp_path / "events.tsv",
              mask=HAXBY / "masks" / "25mm" / "brain.nii.gz", confounds=None,
              metadata={"RepetitionTime": 2.5})
    spec = spec_from_dict({"task": "objects", "first_level": {"contrasts": {"faceMinusHouse": "face - house"}}})
    out = first_level_subject([run], first_level_settings(spec), tmp_path / "out", write_design_png=False)
    rows = out.maps.set_index(["contrast", "stat"])["path"]
    mask = np.asarray(nib.load(run.mask).dataobj) > 0
    for name in ("stim", "faceMinusHouse"):
        z = _masked(rows[name, "z"], mask)
        assert np.all(np.isfinite(z)) and np.std(z) > 0
    design = pd.read_csv([p for p in out.design_files if p.suffix == ".tsv"][0], sep="\t")
    assert len(design) == 121 and {"face", "house", "scrambledpix"} <= set(design.columns)
    # no ON trial type: stim = mean of the 8 categories > implicit rest, positive over the brain
    assert _masked(rows["stim", "z"], mask).mean() > 0



def test_first_level_with_two_threads_writes_the_same_maps(run01, tmp_path):
    """Two threads (design plotted in a thread of its own) write the same maps and design plot."""
    spec = spec_from_dict({"first_level": {"confounds": {"strategy": "motion24"}}})
    one = first_level_subject([run01], first_level_settings(spec), tmp_path / "one")
    two = first_level_subject([run01], first_level_settings(spec), tmp_path / "two", blas_threads=2)
    assert len(one.maps) == len(two.maps) == 3
    for a, b in zip(one.maps["path"], two.maps["path"]):
        assert np.array_equal(np.asarray(nib.load(a).dataobj), np.asarray(nib.load(b).dataobj))
        assert a.name == b.name
    png_one, png_two = ([p for p in out.design_files if p.suffix == ".png"] for out in (one, two))
    assert len(png_one) == len(png_two) == 1
    assert png_one[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png_one[0].read_bytes() == png_two[0].read_bytes()


def test_a_design_plot_thread_reraises_what_the_drawing_raised():
    from fmri_pain.glm.first_level.design_plot import DesignPlot

    plot = DesignPlot(pd.DataFrame({"a": ["not", "numbers"]}))
    with pytest.raises(TypeError):  # nilearn's normalisation of a text column
        plot.result()
