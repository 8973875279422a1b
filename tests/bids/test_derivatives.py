"""Output plumbing: names, atomic writes, provenance."""

import json
import os

import nibabel as nib
import numpy as np
import pytest

from fmri_pain.bids.derivatives import (atomic_write, provenance, sha256_file, statmap_path,
                                        write_dataset_description, write_nifti)
from fmri_pain.bids.naming import bids_filename


def test_statmap_names_follow_the_output_contract(tmp_path):
    p = statmap_path(tmp_path, contrast="stim", stat="z", subject="01", session="scs", task="stim")
    assert p == tmp_path / "sub-01/ses-scs/func/sub-01_ses-scs_task-stim_space-MNI152NLin2009aSym_contrast-stim_stat-z_statmap.nii.gz"
    g = statmap_path(tmp_path, contrast="dualMinusScs", stat="z", task="stim", desc="fdr")
    assert g == tmp_path / "group/task-stim_space-MNI152NLin2009aSym_contrast-dualMinusScs_desc-fdr_stat-z_statmap.nii.gz"


def test_entities_must_be_alphanumeric():
    with pytest.raises(ValueError, match="alphanumeric"):
        bids_filename({"sub": "../etc"}, "bold", ".nii.gz")
    with pytest.raises(ValueError, match="unknown BIDS entities"):
        bids_filename({"subject": "01"}, "bold", ".nii.gz")


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.tsv"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []
    with atomic_write(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole"
    assert [p.name for p in tmp_path.iterdir()] == ["out.tsv"]


def test_nifti_sidecar_has_inputs_with_sha256(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("data")
    img = nib.Nifti1Image(np.ones((2, 2, 2), np.float32), np.eye(4))
    out = write_nifti(img, tmp_path / "x_stat-z_statmap.nii.gz",
                      provenance({"source": src}, {"alpha": 0.05}))
    side = json.loads((tmp_path / "x_stat-z_statmap.json").read_text())
    assert side["Sources"] == [src.resolve().as_uri()]  # in no BIDS dataset
    checksum = side["SourceChecksums"][side["Sources"][0]]
    assert checksum == f"sha256:{sha256_file(src)}"
    assert checksum == "sha256:3a6eb0790f39ac87c94f3856b2dd2c5d110e6811602261a9a923d3bb23adc8b7"
    assert side["Parameters"] == {"alpha": 0.05}
    assert "nilearn" in side["SoftwareVersions"]
    assert np.asanyarray(nib.load(out).dataobj).sum() == 8


def test_dataset_description(tmp_path):
    desc = json.loads(write_dataset_description(tmp_path, tmp_path).read_text())
    assert desc["DatasetType"] == "derivative"
    assert desc["GeneratedBy"][0]["Name"] == "fmri-pain"
    assert "SourceDatasets" not in desc  # the output itself is no source


def test_sources_are_bids_uris_relative_to_their_datasets(tmp_path):
    from fmri_pain.bids.derivatives import bids_uri

    raw, prep, out = tmp_path / "raw", tmp_path / "raw" / "derivatives" / "fmriprep", tmp_path / "out"
    for folder, desc in ((raw, {"Name": "trial", "BIDSVersion": "1.8.0"}),
                         (prep, {"Name": "fMRIPrep", "BIDSVersion": "1.8.0", "DatasetType": "derivative",
                                 "GeneratedBy": [{"Name": "fMRIPrep"}]})):
        (folder / "sub-01" / "func").mkdir(parents=True)
        (folder / "dataset_description.json").write_text(json.dumps(desc))
    bold = prep / "sub-01" / "func" / "sub-01_task-x_desc-preproc_bold.nii.gz"
    events = raw / "sub-01" / "func" / "sub-01_task-x_events.tsv"
    own = out / "sub-01" / "func" / "sub-01_task-x_stat-z_statmap.nii.gz"
    for path in (bold, events, own):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    side = provenance([bold, events, own], dataset=out)
    assert side["Sources"] == ["bids:fmriprep:sub-01/func/sub-01_task-x_desc-preproc_bold.nii.gz",
                               "bids:raw:sub-01/func/sub-01_task-x_events.tsv",
                               "bids::sub-01/func/sub-01_task-x_stat-z_statmap.nii.gz"]
    assert bids_uri(tmp_path / "loose.nii.gz") == (tmp_path / "loose.nii.gz").resolve().as_uri()
    desc = json.loads(write_dataset_description(out, raw, prep).read_text())
    assert desc["SourceDatasets"] == [{"URL": raw.resolve().as_uri()}, {"URL": prep.resolve().as_uri()}]
    # the names of the URIs above resolve through DatasetLinks
    assert desc["DatasetLinks"] == {"raw": raw.resolve().as_uri(), "fmriprep": prep.resolve().as_uri()}


def test_atomic_writes_have_ordinary_permissions(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    out = write_nifti(nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4)), tmp_path / "a.nii.gz")
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask


def _strict_loads(text: str):
    def refuse(name):
        raise ValueError(f"non-strict JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_write_json_is_strict_and_writes_null_for_non_finite(tmp_path):
    from fmri_pain.bids.derivatives import write_json

    record = {"a": float("inf"), "b": [np.float64("nan"), 1.5, -np.inf], "c": np.float32(2.0),
              "d": np.array([1.0, np.nan]), "e": {"f": np.int64(3)}, "p": tmp_path}
    text = write_json(record, tmp_path / "x.json").read_text()
    assert "Infinity" not in text and "NaN" not in text
    assert _strict_loads(text) == {"a": None, "b": [None, 1.5, None], "c": 2.0, "d": [1.0, None],
                                   "e": {"f": 3}, "p": str(tmp_path)}
    with pytest.raises(TypeError, match="not JSON serialisable"):
        write_json({"x": object()}, tmp_path / "y.json")
    assert not (tmp_path / "y.json").exists()


def test_every_json_of_a_pipeline_run_is_strict(demo_output):
    """Participant + group levels of the demo: every JSON the toolkit wrote parses strictly."""
    import nibabel as nib

    files = sorted(demo_output.rglob("*.json"))
    assert len(files) > 50
    for path in files:
        try:
            _strict_loads(path.read_text())
        except ValueError as exc:
            raise AssertionError(f"{path}: {exc}") from exc
    thresholded = sorted(demo_output.glob("group/*_desc-fdr_stat-z_statmap.json"))
    assert thresholded
    for path in thresholded + sorted(demo_output.glob("group/*_desc-fwe_stat-z_statmap.json")):
        thr = _strict_loads(path.read_text())["Threshold"]
        img = path.with_name(path.name.replace(".json", ".nii.gz"))
        if thr["ZThreshold"] is None:  # null only where nothing survives, and it says so
            assert "no voxel survives" in thr["Description"]
            assert not np.any(np.asanyarray(nib.load(img).dataobj))
        else:
            assert np.isfinite(thr["ZThreshold"]) and "no voxel survives" not in thr["Description"]


def test_orphaned_temporaries_are_recognised_and_only_they_removed(tmp_path):
    from fmri_pain.bids.derivatives import is_temporary_name, remove_orphaned_temporaries

    names = []
    for name in ("a_stat-z_statmap.nii.gz", "a.json", "a.tsv", "README", "sub-01.html"):
        with atomic_write(tmp_path / "sub-01" / name) as tmp:
            names.append(tmp.name)
            assert is_temporary_name(tmp.name), tmp.name
            tmp.write_text("x")
            os.link(tmp, tmp.with_name(tmp.name + "-copy"))
            orphan = tmp.parent / tmp.name  # the hard link below keeps it after the rename
        os.replace(tmp.with_name(tmp.name + "-copy"), orphan)
    for keep in (".gitignore", "a.tmp", ".hidden.nii.gz", "x_desc-tmp_bold.nii.gz"):
        (tmp_path / keep).write_text("keep")
        assert not is_temporary_name(keep)
    removed = remove_orphaned_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == sorted(names)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == sorted(
        [".gitignore", "a.tmp", ".hidden.nii.gz", "x_desc-tmp_bold.nii.gz"])
    assert sorted(p.name for p in (tmp_path / "sub-01").iterdir()) == [
        "README", "a.json", "a.tsv", "a_stat-z_statmap.nii.gz", "sub-01.html"]


def test_dataset_description_is_written_only_when_it_changes(tmp_path):
    path = write_dataset_description(tmp_path, tmp_path / "bids")
    stat = path.stat()
    write_dataset_description(tmp_path, tmp_path / "bids")
    assert path.stat().st_mtime_ns == stat.st_mtime_ns and path.stat().st_ino == stat.st_ino
    write_dataset_description(tmp_path, tmp_path / "other")
    assert "other" in json.loads(path.read_text())["SourceDatasets"][0]["URL"]


def test_empty_thresholded_map_has_null_threshold_with_a_reason(tmp_path):
    """FDR on a null z map finds nothing: the sidecar says null and why (strict JSON)."""
    from types import SimpleNamespace

    from fmri_pain.config.group import GroupSpec
    from fmri_pain.glm.second_level.fit import threshold_and_write

    rng = np.random.default_rng(0)
    z = rng.uniform(-1.0, 1.0, size=(6, 6, 6)).astype(np.float32)  # p > 0.15 everywhere
    mask = nib.Nifti1Image(np.ones((6, 6, 6), np.uint8), np.eye(4))
    entry = SimpleNamespace(contrast="scs", stat_type="t", paths={}, thresholds={}, clusters={})
    threshold_and_write(entry, nib.Nifti1Image(z, np.eye(4)), mask, GroupSpec(), {"Description": "test"},
                        output_dir=tmp_path, task="stim", space="MNI152NLin2009aSym")
    fdr = _strict_loads(entry.paths["z_fdr"].with_name(
        entry.paths["z_fdr"].name.replace(".nii.gz", ".json")).read_text())["Threshold"]
    assert fdr["ZThreshold"] is None and "no voxel survives" in fdr["Description"]
    assert not np.any(np.asanyarray(nib.load(entry.paths["z_fdr"]).dataobj))
    fwe = _strict_loads(entry.paths["z_fwe"].with_name(
        entry.paths["z_fwe"].name.replace(".nii.gz", ".json")).read_text())["Threshold"]
    assert fwe["ZThreshold"] > 3 and "no voxel survives" not in fwe["Description"]


def test_rewriting_identical_bytes_leaves_the_file_alone(tmp_path):
    img = nib.Nifti1Image(np.arange(27, dtype=np.float32).reshape(3, 3, 3), np.eye(4))
    path = write_nifti(img, tmp_path / "a_stat-z_statmap.nii.gz", sidecar={"A": 1})
    side = path.with_name("a_stat-z_statmap.json")
    before = {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in (path, side)}
    write_nifti(img, path, sidecar={"A": 1})
    assert {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in (path, side)} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [side.name, path.name]  # no temporary left
    write_nifti(nib.Nifti1Image(np.ones((3, 3, 3), np.float32), np.eye(4)), path, sidecar={"A": 2})
    assert path.stat().st_ino != before[path][1] and np.asarray(nib.load(path).dataobj).sum() == 27
    assert json.loads(side.read_text()) == {"A": 2}
