"""BIDS Stats Models (BSM) out: the spec that ran written as a ``*_smdl.json`` model.

:func:`spec_to_bsm` writes what BSM can express in its own fields (the task, the run GLM's
trial types, HRF, motion columns, high-pass cut-off and t contrasts, fixed effects per subject,
the dataset level's one-sample test, covariates, and the between-subject tests BSM can
express) and every other key of the spec under
``Model.Software["fmri-pain"]`` of the run node (run-level settings) and of the dataset node
(group-level settings), so :func:`fmri_pain.config.bsm.bsm_to_dict` reads back the same spec.
The crossover group model (conditions x periods, carry-over, repeated measures) has no BSM
expression: it stays in the spec, and the model's ``Description`` says so.
"""

from __future__ import annotations

from typing import Any

from fmri_pain.config.bsm import MOTION24, SOFTWARE, model_label
from fmri_pain.config.contrast_expressions import parse_contrast
from fmri_pain.config.spec import AnalysisSpec
from fmri_pain.confound_names import MOTION

CROSSOVER_NOTE = "the crossover group model is in spec.json; BSM cannot express it"
"""What the written model, the log and the methods say about the crossover model."""

BSM_VERSION = "1.0.0"
"""``BIDSModelVersion`` written."""

_RUN_KEYS = ("space", "min_volumes", "events", "preprocess", "first_level")
"""Top-level spec keys carried by the run node's ``Software`` (the rest: the dataset node's)."""

_STRATEGY_NOTES = {
    "auto": ("X lists the 24 motion columns; per run, the 24 or only the 6 motion parameters are used "
             "(first_level.confounds.strategy auto). "),
    "acompcor": "Besides the 24 motion columns of X, aCompCor components are regressors "
                "(first_level.confounds.strategy acompcor). ",
}


def spec_to_bsm(spec: AnalysisSpec, name: str = "fmriPain") -> dict[str, Any]:
    """The BIDS Stats Model (a JSON-able dict) of ``spec``.

    Parameters
    ----------
    spec : AnalysisSpec
    name : str
        The model's ``Name``.

    Returns
    -------
    dict
        Valid against bsmschema's ``BIDSStatsModel``.
    """
    d = spec.to_dict()
    first = d["first_level"]
    events = d["events"]
    trial_types = [events["on_trial_type"]] + ([events["off_trial_type"]] if events["off_trial_type"] else [])
    contrasts = []
    stim = {events["on_trial_type"]: 1.0, **({events["off_trial_type"]: -1.0} if events["off_trial_type"] else {})}
    for label, weights in [("stim", stim)] + [(k, parse_contrast(v)) for k, v in first["contrasts"].items()]:
        weights = {t: w for t, w in weights.items() if w != 0}
        trial_types += [t for t in weights if t not in trial_types]
        contrasts.append({"Name": label, "ConditionList": [f"trial_type.{t}" for t in weights],
                          "Weights": list(weights.values()), "Test": "t"})
    regressors = [f"trial_type.{t}" for t in trial_types]

    run_software = {k: d[k] for k in _RUN_KEYS}
    fl = run_software["first_level"] = dict(first)
    confounds = fl["confounds"] = dict(first["confounds"])
    strategy = confounds["strategy"]
    columns = {"none": (), "motion6": MOTION}.get(strategy, MOTION24)
    if strategy in ("none", "motion6", "motion24"):
        del confounds["strategy"]
    for key in ("hrf_model", "contrasts"):
        del fl[key]
    hrf: dict[str, Any] = {"Variables": regressors, "Model": first["hrf_model"]}
    if first["hrf_model"] == "fir":
        hrf["Parameters"] = {"fir_delays": first["fir_delays"]}
        del fl["fir_delays"]
    model: dict[str, Any] = {"Type": "glm", "X": [*regressors, *columns, 1], "HRF": hrf}
    if first["drift_model"] == "cosine":
        model["Options"] = {"HighPassFilterCutoffHz": first["high_pass"]}
        del fl["high_pass"]
    if first["drift_model"] in ("cosine", "none"):
        del fl["drift_model"]
    model["Software"] = {SOFTWARE: run_software}
    run_node = {
        "Level": "Run", "Name": "run", "GroupBy": ["run", "subject"],
        "Transformations": {"Transformer": "pybids-transforms-v1",
                            "Instructions": [{"Name": "Factor", "Input": ["trial_type"]}]},
        "Model": model, "Contrasts": contrasts,
    }
    subject_node = {"Level": "Subject", "Name": "subject", "GroupBy": ["subject", "contrast"],
                    "Model": {"Type": "meta", "X": [1]}, "DummyContrasts": {"Test": "t"}}
    dataset_software = {k: v for k, v in d.items() if k not in _RUN_KEYS and k != "task"}
    group = dataset_software["group"] = dict(d["group"])
    covariates = group.pop("covariates")
    tests = group.pop("between_subjects")
    x, dataset_contrasts = _between_subjects(tests, covariates)
    if tests and x is None:
        group["between_subjects"] = tests
    if spec.task is None:
        dataset_software["task"] = None
    dataset_node = {
        "Level": "Dataset", "Name": "dataset", "GroupBy": ["contrast"],
        "Model": {"Type": "glm", "X": [1, *covariates, *(x or [])], "Software": {SOFTWARE: dataset_software}},
        "DummyContrasts": {"Contrasts": [1], "Test": "t"},
        **({"Contrasts": dataset_contrasts} if x is not None and dataset_contrasts else {}),
    }
    description = (
        "Written by fmri-pain from the analysis spec that ran. Run GLMs (every trial "
        "type of events.tsv modelled; the ON > OFF contrast is 'stim'), fixed effects per subject "
        "(per condition in a crossover), a one-sample t test of each contrast at the dataset level"
        + (" with mean-centred covariates" if covariates else "")
        + (", and the between-subject tests of its Contrasts (a covariate's slope, a group "
           "difference)" if x is not None and dataset_contrasts else "") + ". "
        + (_STRATEGY_NOTES[strategy] if strategy in _STRATEGY_NOTES else "") + "Settings BIDS Stats Models "
        f"has no field for are under Model.Software.{SOFTWARE}; {CROSSOVER_NOTE}.")
    out: dict[str, Any] = {"Name": model_label(name) or "fmriPain", "BIDSModelVersion": BSM_VERSION,
                           "Description": description}
    if spec.task is not None:
        out["Input"] = {"task": [spec.task]}
    out["Nodes"] = [run_node, subject_node, dataset_node]
    out["Edges"] = [{"Source": "run", "Destination": "subject"},
                    {"Source": "subject", "Destination": "dataset"}]
    return out



def _between_subjects(tests: list[dict], covariates: list[str]) -> tuple[list[str] | None, list[dict]]:
    """``group.between_subjects`` as dataset X columns and contrasts (X None: not expressible).

    BSM's dataset node applies to every contrast, beside the intercept the spec always tests:
    expressible are tests of every contrast (``contrast: null``) of a covariate of
    ``group.covariates`` or of one indicator ``column.A`` (``levels: [A]``). Otherwise every
    test stays under ``Model.Software`` (one place, in order).
    """
    indicators: list[str] = []
    contrasts = []
    for test in tests:
        if test["contrast"] is not None:
            return None, []
        if test["design"] == "covariate" and test["column"] in covariates:
            term = test["column"]
        elif test["design"] == "two-group" and len(test["levels"]) == 1:
            term = f"{test['column']}.{test['levels'][0]}"
            if indicators and indicators != [term]:
                return None, []
            indicators = [term]
        else:
            return None, []
        contrasts.append({"Name": test["name"], "ConditionList": [term], "Weights": [1], "Test": "t"})
    return indicators, contrasts
