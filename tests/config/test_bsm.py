"""BIDS Stats Models in: bsmschema validation, translation to the spec, clear errors for the rest."""

import copy
import json
from pathlib import Path

import pytest

from fmri_pain.config.bsm import MOTION24, bsm_to_dict, expression_of, load_analysis, load_bsm, validate_bsm
from fmri_pain.config.contrast_expressions import parse_contrast
from fmri_pain.config.fields import SpecError
from fmri_pain.config.group import BetweenSubjectsTest
from fmri_pain.config.spec import AnalysisSpec, load_spec, spec_from_dict

DATA = Path(__file__).parents[1] / "data" / "bsm"
MOTION6 = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]


def _trial() -> dict:
    return json.loads((DATA / "model-trial_smdl.json").read_text())


def _translate(model: dict) -> AnalysisSpec:
    return spec_from_dict(bsm_to_dict(validate_bsm(model, "m.json"), "m.json"), "m.json")


def test_trial_model_equals_the_same_model_written_as_a_spec():
    spec = load_bsm(DATA / "model-trial_smdl.json")
    assert spec == load_spec(DATA / "spec-trial.yaml")
    assert spec.first_level.confounds.strategy == "motion6" and not spec.first_level.confounds.scrub
    assert spec.first_level.contrasts == {"trialTypeOn": "on"}
    assert spec.first_level.smoothing_fwhm == 4.0  # from Model.Software.fmri-pain
    assert not spec.inference.enabled and not spec.pathways.enabled


def test_adapted_spec_example_translates():
    spec = load_bsm(DATA / "model-exampleConvolved_smdl.json")
    assert spec.task == "stroop"
    assert spec.first_level.contrasts == {"incongruentVsCongruent": "incongruent - congruent"}
    assert (spec.first_level.hrf_model, spec.first_level.drift_model, spec.first_level.high_pass) == (
        "spm", "cosine", 0.01)
    assert spec.first_level.confounds.strategy == "motion6"
    assert spec.group.covariates == ()


def test_adapted_walkthrough_translates_convolve_options():
    spec = load_bsm(DATA / "model-walkthroughConvolved_smdl.json")
    assert spec.task == "simon"
    assert spec.first_level.hrf_model == "glover + derivative"  # Model glover, Derivative true
    assert spec.first_level.drift_model == "none"  # no HighPassFilterCutoffHz
    assert spec.first_level.confounds.strategy == "none"
    assert spec.first_level.contrasts == {"IvC": "incongruent - congruent"}


@pytest.mark.parametrize("name, where", [
    ("model-example_smdl.json", "Input.task"),
    ("model-walkthrough_smdl.json", "Input.task"),
    ("model-ds003Fitlins_smdl.json", "Input.task: Input should be a valid list (+13 more)"),
])
def test_published_examples_that_bsmschema_rejects_give_one_line(name, where):
    with pytest.raises(SpecError) as err:
        load_bsm(DATA / name)
    text = str(err.value)
    assert "\n" not in text and str(DATA / name) in text
    assert "not a valid BIDS Stats Model (bsmschema)" in text and where in text


def _mutate(change):
    model = _trial()
    change(model)
    return model


def _run(m):
    return m["Nodes"][0]


def _dataset(m):
    return m["Nodes"][-1]


@pytest.mark.parametrize("change, expected", [
    (lambda m: _run(m)["Model"].update(Formula="on + 1"), "Nodes[run].Model.Formula"),
    (lambda m: _dataset(m)["Model"].update(X=["group.patient", "group.control"]),
     "DummyContrasts: would test every column"),
    (lambda m: _dataset(m)["Model"].update(X=[1, "age"]), "DummyContrasts: would test every column"),
    (lambda m: _dataset(m).update(DummyContrasts=None, Contrasts=[
        {"Name": "patientsVsControls", "ConditionList": [1, "group"], "Weights": [0, 1], "Test": "t"}]),
     "Nodes[dataset].Contrasts[patientsVsControls]: not expressible"),
    (lambda m: _dataset(m).update(Model={"Type": "glm", "X": ["group.a", "group.b"]}, DummyContrasts=None,
                                  Contrasts=[{"Name": "sum", "ConditionList": ["group.a", "group.b"],
                                              "Weights": [1, 1], "Test": "t"}]),
     "Contrasts[sum]: not expressible"),
    (lambda m: _dataset(m).update(Model={"Type": "glm", "X": ["group.a", "sex.m"]}, DummyContrasts=None),
     "indicators of 2 columns"),
    (lambda m: _dataset(m).update(Model={"Type": "glm", "X": [1, "group.a", "group.b"]}),
     "beside the intercept, one indicator"),
    (lambda m: _dataset(m).update(Model={"Type": "glm", "X": ["group.a"]}), "two cell-means"),
    (lambda m: _dataset(m).update(Model={"Type": "glm", "X": [1, "age"]}, DummyContrasts=None,
                                  Contrasts=[{"Name": "old", "ConditionList": ["age"], "Weights": [2],
                                              "Test": "t"}]), "Contrasts[old]: not expressible"),
    (lambda m: _dataset(m).update(Model={"Type": "glm", "X": [1, "age"]}, DummyContrasts=None,
                                  Contrasts=[{"Name": "age", "ConditionList": ["age"], "Weights": [[1]],
                                              "Test": "F"}]), "Contrasts[age]: only t tests"),
    (lambda m: _run(m).update(Contrasts=[
        {"Name": "anyOn", "ConditionList": ["trial_type.on"], "Weights": [[1]], "Test": "F"}]),
     "Nodes[run].Contrasts[anyOn].Test"),
    (lambda m: m.update(Edges=[{"Source": "run", "Destination": "session",
                                "Filter": {"contrast": ["trialTypeOn"]}},
                               {"Source": "session", "Destination": "subject"},
                               {"Source": "subject", "Destination": "dataset"}]), "Edges[0].Filter"),
    (lambda m: m["Input"].update(subject=["01"]), "--participant-label"),
    (lambda m: _run(m)["Transformations"]["Instructions"].append({"Name": "Scale", "Input": ["on"]}),
     "Nodes[run].Transformations.Instructions[2]"),
    (lambda m: _run(m)["Model"]["X"].insert(1, "framewise_displacement"), "framewise_displacement"),
    (lambda m: _run(m)["Model"]["X"].insert(1, "motion_outlier*"), "Nodes[run].Model.X"),
    (lambda m: _run(m).pop("Transformations"), "no HRF"),
    (lambda m: _run(m)["Model"]["Options"].update(LowPassFilterCutoffHz=0.1),
     "Nodes[run].Model.Options.LowPassFilterCutoffHz"),
    (lambda m: m["Nodes"][2].update(Contrasts=[
        {"Name": "x", "ConditionList": [1], "Weights": [1], "Test": "t"}]), "Nodes[subject].Contrasts"),
    (lambda m: m["Nodes"][1]["Model"].update(Type="glm"), "Nodes[session].Model"),
    (lambda m: _run(m)["Model"]["Software"]["fmri-pain"].update(events={"on_trial_type": "stimOn"}),
     "contradicts"),
    (lambda m: _run(m)["Model"]["X"].remove(1), "intercept"),
    (lambda m: m["Nodes"].pop(), "one Dataset node"),
])
def test_what_the_spec_cannot_express_is_an_error_naming_file_and_node(change, expected):
    with pytest.raises(SpecError) as err:
        _translate(_mutate(change))
    text = str(err.value)
    assert text.startswith("m.json: ") and expected in text and "\n" not in text


def test_dataset_covariates_are_adjusted_for_and_only_the_intercept_tested():
    spec = _translate(_mutate(lambda m: _dataset(m).update(
        Model={"Type": "glm", "X": [1, "age", "vas_pain"]}, DummyContrasts={"Contrasts": [1], "Test": "t"})))
    assert spec.group.covariates == ("age", "vas_pain")
    spec = _translate(_mutate(lambda m: _dataset(m).update(DummyContrasts=None, Contrasts=[
        {"Name": "mean", "ConditionList": [1], "Weights": [1], "Test": "t"}])))
    assert spec.group.covariates == ()


def _dataset_node(x, *contrasts, dummy=True):
    def change(m):
        _dataset(m).update(Model={"Type": "glm", "X": x}, Contrasts=[
            {"Name": name, "ConditionList": terms, "Weights": weights, "Test": "t"}
            for name, terms, weights in contrasts],
            DummyContrasts={"Contrasts": [1], "Test": "t"} if dummy else None)
    return _translate(_mutate(change))


def test_dataset_two_group_and_covariate_designs_become_between_subjects_tests(caplog):
    spec = _dataset_node(["group.patient", "group.control", "age"],
                         ("patients vs controls", ["group.control", "group.patient"], [-1, 1]), dummy=False)
    assert spec.group.covariates == ("age",)
    assert spec.group.between_subjects == (BetweenSubjectsTest(
        "patientsVsControls", "two-group", "group", None, ("patient", "control")),)
    assert "the intercept is not tested" in caplog.text
    spec = _dataset_node([1, "group.patient"], ("patients", ["group.patient"], ["1"]))
    assert spec.group.between_subjects == (BetweenSubjectsTest(
        "patients", "two-group", "group", None, ("patient",)),)
    spec = _dataset_node([1, "age", "vas_pain"], ("mean", [1], [1]), ("slope", ["age"], [1]),
                         ("vas", [1, "vas_pain"], [0, 1]))
    assert spec.group.covariates == ("age", "vas_pain")
    assert spec.group.between_subjects == (BetweenSubjectsTest("slope", "covariate", "age"),
                                           BetweenSubjectsTest("vas", "covariate", "vas_pain"))


def test_motion24_and_software_refinements():
    def motion24(m):
        _run(m)["Model"]["X"] = ["trial_type.on", *MOTION24, 1]
    assert _translate(_mutate(motion24)).first_level.confounds.strategy == "motion24"

    def auto(m):
        motion24(m)
        _run(m)["Model"]["Software"]["fmri-pain"]["first_level"]["confounds"] = {"strategy": "auto",
                                                                                   "scrub": True}
    conf = _translate(_mutate(auto)).first_level.confounds
    assert (conf.strategy, conf.scrub) == ("auto", True)

    def auto_over_motion6(m):  # auto may only refine the 24 columns it draws from
        _run(m)["Model"]["Software"]["fmri-pain"]["first_level"]["confounds"] = {"strategy": "auto"}
    with pytest.raises(SpecError, match="contradicts 'motion6'"):
        _translate(_mutate(auto_over_motion6))


def test_contrast_weights_fractions_and_names():
    def contrasts(m):
        run = _run(m)
        run["Model"]["X"] = ["trial_type.on", "trial_type.off", "trial_type.rest", 1]
        run["Transformations"]["Instructions"][1]["Input"] = ["trial_type.on", "trial_type.off",
                                                              "trial_type.rest"]
        run["DummyContrasts"] = {"Contrasts": ["trial_type.off"], "Test": "t"}
        run["Contrasts"] = [
            {"Name": "on_vs_others", "ConditionList": ["trial_type.on", "trial_type.off", "trial_type.rest"],
             "Weights": [1, "-1/3", "-2/3"], "Test": "t"},
            {"Name": "stim", "ConditionList": ["trial_type.on", "trial_type.off"], "Weights": [1, -1],
             "Test": "t"}]
    spec = _translate(_mutate(contrasts))
    weights = parse_contrast(spec.first_level.contrasts["onVsOthers"])
    assert weights == {"on": 1.0, "off": -1 / 3, "rest": -2 / 3}
    assert spec.first_level.contrasts["trialTypeOff"] == "off"
    assert (spec.events.on_trial_type, spec.events.off_trial_type) == ("on", "off")  # from 'stim'


def test_convolve_must_cover_every_trial_type():
    def partial(m):
        _run(m)["Model"]["X"] = ["trial_type.on", "trial_type.off", 1]
    with pytest.raises(SpecError, match=r"Instructions\[1\]\.Input"):
        _translate(_mutate(partial))


@pytest.mark.parametrize("options, expected", [
    ({"Model": "spm", "Derivative": True, "Dispersion": True}, "spm + derivative + dispersion"),
    ({"Model": "glover"}, "glover"),
    ({}, "spm"),  # pybids' default model
])
def test_convolve_options_name_the_hrf(options, expected):
    def convolve(m):
        _run(m)["Transformations"]["Instructions"][1] = {"Name": "Convolve", "Input": ["trial_type.on"],
                                                         **options}
    assert _translate(_mutate(convolve)).first_level.hrf_model == expected


def test_dispersion_without_derivative_is_refused():
    def convolve(m):
        _run(m)["Transformations"]["Instructions"][1].update(Dispersion=True)
    with pytest.raises(SpecError, match="'spm \\+ dispersion' is not one of"):
        _translate(_mutate(convolve))


def test_fir_needs_its_delays_in_model_hrf():
    def fir(m):
        _run(m).pop("Transformations")
        _run(m)["Model"]["HRF"] = {"Variables": ["trial_type.on"], "Model": "fir",
                                   "Parameters": {"fir_delays": [0, 2, 4]}}
    spec = _translate(_mutate(fir))
    assert (spec.first_level.hrf_model, spec.first_level.fir_delays) == ("fir", (0, 2, 4))


def test_expression_of_reads_back_the_same_floats():
    weights = {"a": 1.0, "b": -1 / 3, "c": 0.1 + 0.2, "d": -1.0}
    text = expression_of(weights)
    assert text.startswith("a - 0.3333333333333333 * b + ")
    assert parse_contrast(text) == weights


def test_load_analysis_detects_bsm_given_as_spec(tmp_path):
    spec, name = load_analysis(DATA / "model-trial_smdl.json")
    assert name == "trial_motion6" and spec == load_spec(DATA / "spec-trial.yaml")
    plain = tmp_path / "spec.json"
    plain.write_text(json.dumps({"first_level": {"smoothing_fwhm": 5.0}}))
    spec, name = load_analysis(plain)
    assert name is None and spec.first_level.smoothing_fwhm == 5.0
    with pytest.raises(SpecError, match="not both"):
        load_analysis(plain, DATA / "model-trial_smdl.json")


def test_cli_bad_model_is_exit_2_with_one_line(tmp_path, capsys):
    from fmri_pain.cli import main

    bad = tmp_path / "model-bad_smdl.json"
    model = copy.deepcopy(_trial())
    del model["Nodes"][0]["Model"]["Type"]
    bad.write_text(json.dumps(model))
    for flag in ("--model", "--spec", "--config-file"):  # --spec / --config-file: detected by 'Nodes'
        code = main([str(tmp_path / "bids"), str(tmp_path / "out"), "participant", flag, str(bad)])
        err = capsys.readouterr().err.strip()
        assert code == 2, flag
        assert err.count("\n") == 0 and str(bad) in err and "Nodes[run].Model.Type" in err
        assert "Traceback" not in err
