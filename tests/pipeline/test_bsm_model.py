"""A BIDS Stats Model end to end: the same maps as the same model written as a spec; model files written."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import yaml
from bsmschema.models import BIDSStatsModel

from fmri_pain.config.bsm import bsm_to_dict
from fmri_pain.config.bsm_export import CROSSOVER_NOTE
from fmri_pain.config.spec import load_spec, spec_from_dict
from fmri_pain.pipeline.group import write_model_files

DATA = Path(__file__).parents[1] / "data" / "bsm"


def test_write_model_files_writes_spec_json_and_a_valid_bsm(tmp_path):
    spec = load_spec(DATA / "spec-trial.yaml")
    paths = write_model_files(tmp_path, spec, "trial motion6")
    assert paths["bsm"] == tmp_path / "model-trialMotion6_smdl.json"
    assert json.loads(paths["spec"].read_text()) == spec.to_dict()
    model = BIDSStatsModel.model_validate(json.loads(paths["bsm"].read_text()))
    assert CROSSOVER_NOTE in model.Description
    assert spec_from_dict(bsm_to_dict(model)) == spec


BLANK_PNG = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
             "YPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")


def test_bsm_and_spec_routes_write_the_same_maps(tmp_path, monkeypatch):
    """Both routes end to end on a small simulated trial (3 subjects, 40 volumes, 8 mm, no
    permutations or pathways). The reports' glass-brain figures, four fifths of the run time and
    not what is compared here, are drawn as a blank image."""
    from fmri_pain.cli import main
    from fmri_pain.report import group as group_report
    from fmri_pain.report import subject as subject_report
    from fmri_pain.simulate.dataset import simulate_trial

    for module in (group_report, subject_report):
        monkeypatch.setattr(module, "glass_brain_uri", lambda *args, **kwargs: BLANK_PNG)
    sim = simulate_trial(tmp_path / "sim", n_subjects=3, seed=1, n_volumes=40, voxel_size=8.0,
                         derivatives=True)
    # the trial model with a dataset-level covariate test (participants.tsv age), both ways
    model = json.loads((DATA / "model-trial_smdl.json").read_text())
    model["Nodes"][-1].update(DummyContrasts={"Contrasts": [1], "Test": "t"}, Contrasts=[
        {"Name": "age", "ConditionList": ["age"], "Weights": [1], "Test": "t"}])
    model["Nodes"][-1]["Model"]["X"] = [1, "age"]
    (tmp_path / "model-trial_smdl.json").write_text(json.dumps(model))
    spec = yaml.safe_load((DATA / "spec-trial.yaml").read_text())
    spec["group"] = {"covariates": ["age"], "between_subjects": [
        {"name": "age", "design": "covariate", "column": "age"}]}
    (tmp_path / "spec-trial.yaml").write_text(yaml.safe_dump(spec))
    outputs = {}
    for route, option in (("bsm", ["--model", str(tmp_path / "model-trial_smdl.json")]),
                          ("spec", ["--spec", str(tmp_path / "spec-trial.yaml")])):
        out = outputs[route] = tmp_path / route
        for level in ("participant", "group"):
            code = main([str(sim.bids_dir), str(out), level, "--derivatives", str(sim.derivatives_dir),
                         "--scheduler", "none", "--quiet", *option])
            assert code == 0, (route, level)
    maps = {route: sorted(p.relative_to(out) for p in out.rglob("*_statmap.nii.gz"))
            for route, out in outputs.items()}
    assert maps["bsm"] == maps["spec"]
    names = {p.name for p in maps["bsm"]}
    assert any("contrast-trialTypeOn_stat-z" in n for n in names)  # the run node's dummy contrast
    assert any(p.parts[0] == "group" and "contrast-dual_stat-t" in p.name for p in maps["bsm"])
    for stat in ("effect", "t", "z", "p"):  # the between-subject covariate test of a condition
        assert any(p.parts[0] == "group" and f"contrast-dualAge_stat-{stat}_" in p.name for p in maps["bsm"])
    for rel in maps["bsm"]:
        a = np.asanyarray(nib.load(outputs["bsm"] / rel).dataobj)
        b = np.asanyarray(nib.load(outputs["spec"] / rel).dataobj)
        assert np.allclose(a, b, equal_nan=True), rel
    assert json.loads((outputs["bsm"] / "spec.json").read_text()) == json.loads(
        (outputs["spec"] / "spec.json").read_text())
    for route, name in (("bsm", "trialMotion6"), ("spec", "fmriPain")):
        model = json.loads((outputs[route] / f"model-{name}_smdl.json").read_text())
        BIDSStatsModel.model_validate(model)
        assert CROSSOVER_NOTE in model["Description"]
        assert CROSSOVER_NOTE in (outputs[route] / "CITATION.md").read_text()
