"""First-level nuisance model: one high-pass basis, the dof account, ``auto``, constant runs, duplicated events."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from fmri_pain.errors import InputError
from fmri_pain.glm.first_level.confounds import choose_motion_model
from fmri_pain.glm.first_level.design import high_pass_bases, make_run_design
from fmri_pain.glm.first_level.events import read_events
from fmri_pain.glm.first_level.fit import fit_run
from fmri_pain.glm.first_level.outputs import RUN_MODEL_KEYS
from fmri_pain.glm.first_level.subject import first_level_subject
from fmri_pain.pipeline.participant import first_level_settings
from fmri_pain.bids.runs import Run
from fmri_pain.config.spec import spec_from_dict
from tests.glm.first_level.test_first_level import N_SCANS, SPIKES, TR, _write_run


def _spec(**confounds):
    drift = confounds.pop("drift_model", "cosine")
    return spec_from_dict({"first_level": {"drift_model": drift, "confounds": confounds}})


def _fit_run(run: Run, spec):
    """fit_run with the sections of an AnalysisSpec."""
    return fit_run(run, spec.first_level, spec.events, spec.min_volumes)


def _with_confounds(run: Run, frame: pd.DataFrame, folder: Path, meta: dict | None = None) -> Run:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / run.confounds.name
    frame.to_csv(path, sep="\t", index=False, na_rep="n/a")
    if meta is not None:
        path.with_suffix(".json").write_text(json.dumps(meta))
    return Run(**{**run.__dict__, "confounds": path})


@pytest.fixture(scope="module")
def run01(tmp_path_factory) -> Run:
    return _write_run(tmp_path_factory.mktemp("nuis") / "sub-01" / "func", "01", None, seed=1)


@pytest.fixture(scope="module")
def raw_route_run(run01, tmp_path_factory) -> Run:
    """run01 with the confounds table the project's own preprocessing writes (cosines, CompCor)."""
    from fmri_pain.preprocess.confounds import compute_confounds

    data = np.asarray(nib.load(run01.bold).dataobj, dtype=np.float32)
    brain = np.asarray(nib.load(run01.mask).dataobj) > 0
    wm = np.zeros_like(brain)
    wm[2:7, 6:10, 5:8] = True
    csf = np.zeros_like(brain)
    csf[6:9, 2:5, 1:4] = True
    motion = pd.read_csv(run01.confounds, sep="\t")[
        ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]].to_numpy()
    frame, meta = compute_confounds(data, brain, wm & brain, csf & brain, motion, TR)
    assert any(c.startswith("cosine") for c in frame) and "a_comp_cor_00" in frame
    return _with_confounds(run01, frame, tmp_path_factory.mktemp("rawroute"), meta)


# ----------------------------------------------------------------------------- one high-pass basis
@pytest.mark.parametrize("source", ["fmriprep_cosines", "no_cosines", "raw_route"])
@pytest.mark.parametrize("drift_model", ["cosine", "polynomial", "none"])
def test_no_design_has_two_high_pass_bases(source, drift_model, run01, raw_route_run, tmp_path):
    run = {"fmriprep_cosines": run01, "raw_route": raw_route_run}.get(source)
    if run is None:
        frame = pd.read_csv(run01.confounds, sep="\t")
        run = _with_confounds(run01, frame.drop(columns=[c for c in frame if c.startswith("cosine")]),
                              tmp_path)
    tsv_cosines = [c for c in pd.read_csv(run.confounds, sep="\t", nrows=0).columns if c.startswith("cosine")]
    assert bool(tsv_cosines) == (source != "no_cosines")
    strategies = ["auto", "motion24"] + (["acompcor"] if source == "raw_route" else [])
    for strategy in strategies:
        fit = _fit_run(run, _spec(strategy=strategy, scrub=False, drift_model=drift_model))
        columns = fit.design.columns.tolist()
        assert not [c for c in columns if c.startswith("cosine")]
        n_drift = sum(c.startswith("drift_") for c in columns)
        expected = [] if drift_model == "none" else ["drift"]
        assert high_pass_bases(columns) == expected == fit.model["HighPassBases"]
        assert (n_drift > 0) == (drift_model != "none")
        assert fit.model["NuisanceRegressors"]["Drift"] == n_drift
        assert fit.model["DriftModel"] == drift_model
        assert fit.model["UnusedConfoundsColumns"] == tsv_cosines
        if strategy == "acompcor":  # nilearn loads the cosines with CompCor; they are dropped again
            assert fit.model["NuisanceRegressors"]["Other"] == 6 and "a_comp_cor_05" in columns


def test_cosine_drift_count_and_refusal_of_a_second_basis(run01):
    events = read_events(run01.events)
    spec = _spec().first_level
    design = make_run_design(N_SCANS, TR, events, None, spec)
    # nilearn's DCT order: floor(2 * n * TR * high_pass) regressors
    assert sum(c.startswith("drift_") for c in design) == int(np.floor(2 * N_SCANS * TR / 128))
    cosines = pd.DataFrame({"cosine00": np.cos(np.pi * (np.arange(N_SCANS) + 0.5) / N_SCANS)})
    with pytest.raises(ValueError, match="two high-pass bases"):
        make_run_design(N_SCANS, TR, events, cosines, spec)
    # the spec's cut-off is the one applied, whatever the TSV's cosines encode (128 s)
    fast = spec_from_dict({"first_level": {"high_pass": 1 / 64}})
    fit = _fit_run(run01, fast)
    assert fit.model["NuisanceRegressors"]["Drift"] == int(np.floor(2 * N_SCANS * TR / 64)) == 5
    assert fit.model["HighPass"] == 1 / 64 and "cut-off 64 s" in fit.model["HighPassBasis"]
    none = _spec(drift_model="none").first_level
    assert high_pass_bases(make_run_design(N_SCANS, TR, events, cosines, none).columns) == ["cosine"]


# ----------------------------------------------------------------------------- the dof account
def test_choose_motion_model_short_slow_and_long_fast():
    from nilearn.glm.first_level import make_first_level_design_matrix

    def drifts(n, tr):
        events = pd.DataFrame({"onset": [20.0], "duration": [20.0], "trial_type": ["on"]})
        dm = make_first_level_design_matrix(np.arange(n) * tr, events, drift_model="cosine", high_pass=1 / 128)
        return sum(c.startswith("drift") for c in dm)

    # the SPM auditory block run: 96 volumes at TR 7 s; 10 cosines; motion24 takes (24 + 10) / 94 = 36 %
    assert drifts(96, 7.0) == 10
    assert choose_motion_model(96, 1, 10) == "motion6"
    # an event-related run: ~350 volumes at TR 2 s; (24 + 10) / 348 = 10 %
    assert drifts(350, 2.0) == 10
    assert choose_motion_model(350, 1, 10) == "motion24"
    # the boundary is the budget: 24 + 6 + 0 = 30 <= 0.25 * (n - 2) from n = 122
    assert choose_motion_model(122, 1, 6) == "motion24" and choose_motion_model(121, 1, 6) == "motion6"
    # censored volumes count: 24 + 6 + 19 = 49 <= 0.25 * 198 = 49.5 < 24 + 6 + 20
    assert choose_motion_model(200, 1, 6, n_censored=19) == "motion24"
    assert choose_motion_model(200, 1, 6, n_censored=20) == "motion6"
    assert choose_motion_model(121, 1, 6, budget=0.5) == "motion24"


def test_nuisance_account_in_design_sidecar_and_warning(run01, tmp_path, caplog):
    spec = _spec(strategy="motion24")
    with caplog.at_level(logging.WARNING):
        out = first_level_subject([run01], first_level_settings(spec), tmp_path, write_design_png=False)
    text = out.design_files[0].with_suffix(".json").read_text()
    sidecar = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    design = pd.read_csv(out.design_files[0], sep="\t").drop(columns="frame_time")
    n_drift = int(np.floor(2 * N_SCANS * TR / 128))
    n_censored = len(SPIKES)
    assert sidecar["NuisanceRegressors"] == {"Motion": 24, "Drift": n_drift, "Other": 0,
                                             "CensoredVolumes": n_censored}
    assert sidecar["TaskRegressors"] == 2  # on, rating
    assert sidecar["RunDegreesOfFreedom"] == N_SCANS - 2 - 1
    assert sidecar["NuisanceDegreesOfFreedom"] == 24 + n_drift + n_censored
    assert sidecar["NuisanceDofFraction"] == pytest.approx((24 + n_drift + n_censored) / (N_SCANS - 3), abs=1e-4)
    residual = (N_SCANS - n_censored) - np.linalg.matrix_rank(design.to_numpy())
    assert sidecar["ResidualDegreesOfFreedom"] == residual == N_SCANS - n_censored - (2 + 24 + n_drift + 1)
    assert sidecar["DegreesOfFreedom"] == residual
    assert sidecar["ConfoundsStrategy"] == "motion24" and sidecar["Censoring"] is True
    assert sidecar["HighPassBasis"].startswith("nilearn cosine drift") and sidecar["HighPass"] == 1 / 128
    assert len(design.columns) == 2 + 24 + n_drift + 1
    # 36 % > 25 %: a logged warning naming the subject and run, also in the sidecar and SubjectMaps
    logged = [r.getMessage() for r in caplog.records if "nuisance model takes" in r.getMessage()]
    assert len(logged) == 1 and "sub-01" in logged[0] and str(run01.bold) in logged[0]
    assert logged == [w for w in sidecar["Warnings"] if "nuisance model" in w] == out.warnings
    assert out.qc["nuisance_fraction"].iloc[0] == sidecar["NuisanceDofFraction"]
    z_path = out.maps.set_index(["contrast", "stat"]).loc[("stim", "z"), "path"]
    z_sidecar = json.loads(Path(str(z_path).replace(".nii.gz", ".json")).read_text())
    assert z_sidecar["RunModels"] == {run01.label: {k: sidecar[k] for k in RUN_MODEL_KEYS}}


def test_auto_takes_motion6_on_a_short_run_and_motion24_on_a_long_one(run01, tmp_path, caplog):
    spec = _spec()  # the default: auto
    assert spec.first_level.confounds.strategy == "auto"
    with caplog.at_level(logging.WARNING):
        short = _fit_run(run01, spec)
    assert short.model["ConfoundsStrategy"] == "motion6" and short.model["ConfoundsStrategyRequested"] == "auto"
    assert short.model["NuisanceRegressors"]["Motion"] == 6
    assert short.model["NuisanceDofFraction"] <= 0.25
    assert not [r for r in caplog.records if "nuisance model takes" in r.getMessage()]
    long_run = _write_run(tmp_path / "long", "03", None, seed=3, n=200)
    fit = _fit_run(long_run, spec)
    assert fit.model["ConfoundsStrategy"] == "motion24" and fit.model["NuisanceRegressors"]["Motion"] == 24
    n_drift = int(np.floor(2 * 200 * TR / 128))
    assert fit.model["NuisanceDofFraction"] == pytest.approx((24 + n_drift + 2) / (200 - 3), abs=1e-4)


def test_auto_does_not_censor_beyond_the_bound(run01, tmp_path):
    frame = pd.read_csv(run01.confounds, sep="\t")
    bad = np.arange(10, 31)  # 21 of 80 volumes (26 %) above the FD threshold
    frame.loc[bad, "framewise_displacement"] = 0.9
    run = _with_confounds(run01, frame, tmp_path)
    auto = _fit_run(run, _spec())
    assert auto.n_censored == 0 and auto.model["Censoring"] is False
    assert any("censoring would remove" in w and "sub-01" in w for w in auto.warnings)
    explicit = _fit_run(run, _spec(strategy="motion6"))
    assert explicit.model["Censoring"] is True
    assert explicit.n_censored >= len(bad) and not set(bad) & set(explicit.design.index / TR)


# ----------------------------------------------------------------------------- constant runs
def test_constant_run_is_an_input_error_naming_the_file(run01, tmp_path):
    img = nib.load(run01.bold)
    data = np.repeat(np.asarray(img.dataobj)[..., :1], img.shape[3], axis=3)
    bold = tmp_path / run01.bold.name
    nib.Nifti1Image(data, img.affine).to_filename(bold)
    run = Run(**{**run01.__dict__, "bold": bold})
    with pytest.raises(InputError) as err:
        first_level_subject([run], first_level_settings(_spec()), tmp_path / "out", write_design_png=False)
    assert err.value.path == bold and "constant" in str(err.value) and err.value.subject == "01"
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*_statmap.nii.gz"))


def test_constant_voxels_are_left_out_not_zero_responses(run01, tmp_path):
    img = nib.load(run01.bold)
    data = np.asarray(img.dataobj).copy()
    data[:, :, 1:3] = 0.0  # two slices without signal inside the mask (e.g. outside the field of view)
    bold = tmp_path / run01.bold.name
    nib.Nifti1Image(data, img.affine).to_filename(bold)
    run = Run(**{**run01.__dict__, "bold": bold})
    spec = spec_from_dict({"first_level": {"smoothing_fwhm": None}})
    fit = _fit_run(run, spec)
    brain = np.asarray(nib.load(run.mask).dataobj) > 0
    dead = brain.copy()
    dead[:, :, 3:] = False
    dead[:, :, :1] = False
    assert not fit.mask[dead].any() and fit.mask[brain & ~dead].all()
    assert any(f"{int(dead.sum())} of {int(brain.sum())} mask voxels are constant" in w for w in fit.warnings)
    assert np.all(np.isfinite(fit.contrasts["stim"].z))


# ----------------------------------------------------------------------------- duplicated events
def test_duplicated_events_warning_names_subject_and_file(run01, tmp_path, caplog):
    events = pd.DataFrame({"onset": [0.0, 0.0, 0.0, 60.0], "duration": [20.0, 20.0, 20.0, 20.0],
                           "trial_type": ["on", "on", "on", "on"]})
    path = tmp_path / "sub-01_task-stim_run-1_events.tsv"
    events.to_csv(path, sep="\t", index=False)
    run = Run(**{**run01.__dict__, "events": path})
    with caplog.at_level(logging.WARNING):
        out = first_level_subject([run], first_level_settings(_spec()), tmp_path / "out", write_design_png=False)
    logged = [r.getMessage() for r in caplog.records if "duplicated events" in r.getMessage()]
    assert len(logged) == 1 and "sub-01" in logged[0] and str(path) in logged[0]
    sidecar = json.loads(out.design_files[0].with_suffix(".json").read_text())
    assert logged[0] in sidecar["Warnings"] and logged[0] in out.warnings


# ----------------------------------------------------------------------------- the subject report
def test_subject_report_states_dof_and_warnings(run01, tmp_path):
    from fmri_pain.report.subject import write_subject_report

    spec = _spec(strategy="motion24")
    out = first_level_subject([run01], first_level_settings(spec), tmp_path, write_design_png=False)
    html = write_subject_report("01", [run01], out, spec, tmp_path).read_text()
    n_drift = int(np.floor(2 * N_SCANS * TR / 128))
    resid = N_SCANS - len(SPIKES) - (2 + 24 + n_drift + 1)
    row = html.split("<tbody>")[1].split("</tr>")[0]
    cells = [c.split(">", 1)[1].split("<")[0] for c in row.split("<td")[1:]]
    assert "residual dof" in html and "nuisance dof fraction" in html and "motion model" in html
    assert "motion24" in cells and "24" in cells and str(n_drift) in cells
    assert f"{resid}.0" in cells or str(resid) in cells
    assert f"{(24 + n_drift + len(SPIKES)) / (N_SCANS - 3):.0%}" in cells
    assert "First-level warnings" in html and "nuisance model takes" in html


def test_pathways_run_design_has_one_high_pass_basis(run01):
    from fmri_pain.pathways.connectivity import DEFAULT_CONFOUNDS, run_design

    frame = pd.read_csv(run01.confounds, sep="\t")
    frame["csf"], frame["white_matter"] = np.linspace(0, 1, N_SCANS), np.linspace(1, 0, N_SCANS) ** 2
    run = _with_confounds(run01, frame, run01.confounds.parent / "pathways")
    design = run_design(run, N_SCANS, drift_model="cosine", high_pass=1 / 128)
    assert high_pass_bases(design.columns) == ["drift"] and set(DEFAULT_CONFOUNDS) <= set(design.columns)
    with pytest.raises(ValueError, match="second high-pass basis"):
        run_design(run, N_SCANS, confounds=DEFAULT_CONFOUNDS + ("cosine00", "cosine01"))
    design = run_design(run, N_SCANS, drift_model=None, confounds=("trans_x", "cosine00", "cosine01"))
    assert high_pass_bases(design.columns) == ["cosine"]
