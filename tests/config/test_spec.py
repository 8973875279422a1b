"""The analysis spec: defaults, validation, the shipped YAML files."""

import logging
import time
import tracemalloc
from pathlib import Path

import pytest

from fmri_pain.config.fields import Range, SpecError
from fmri_pain.config.spec import AnalysisSpec, load_spec, spec_from_dict

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"


def test_shipped_trial_spec_equals_the_defaults():
    assert load_spec(PIPELINES / "trial.yaml") == AnalysisSpec()


@pytest.mark.parametrize("path", sorted(PIPELINES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_spec_is_valid(path):
    load_spec(path)


def test_partial_spec_keeps_defaults():
    spec = spec_from_dict({"first_level": {"smoothing_fwhm": 4, "confounds": {"strategy": "acompcor"}}})
    assert spec.first_level.smoothing_fwhm == 4.0
    assert spec.first_level.confounds.strategy == "acompcor"
    assert spec.first_level.hrf_model == "spm"
    assert spec.conditions == ("SCS", "DRGS", "DUAL")


@pytest.mark.parametrize("data, message", [
    ({"first_levl": {}}, "unknown key.*first_levl"),
    ({"first_level": {"hrf": "spm"}}, r"first_level\.hrf"),
    ({"first_level": {"hrf_model": "gamma"}}, "hrf_model = 'gamma' is not one of"),
    ({"first_level": {"smoothing_fwhm": "six"}}, "smoothing_fwhm must be a number"),
    ({"group": {"covariates": "pain_relief"}}, "covariates must be a list"),
    ({"inference": {"n_perm": 10.5}}, "n_perm must be an integer"),
])
def test_bad_spec_names_the_key(data, message):
    with pytest.raises(SpecError, match=message):
        spec_from_dict(data, source="my.yaml")


def test_unreadable_spec_file_names_it(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("first_level: [unclosed")
    with pytest.raises(SpecError, match="bad.yaml"):
        load_spec(bad)


def test_unquoted_yaml_on_key_gets_a_hint(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("events:\n  on: stim\n")
    with pytest.raises(SpecError, match="quote 'on'"):
        load_spec(path)
    with pytest.raises(SpecError, match="on_trial_type"):
        load_spec(path)
    path.write_text("events:\n  'on': stim\n")  # the deprecated alias still works
    assert load_spec(path).events.on_trial_type == "stim"


# ----------------------------------------------------------------------------- the ON event, named once
def test_on_and_off_trial_types_are_yaml_safe_keys(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("events:\n  on_trial_type: stim\n  off_trial_type: rest\n")
    spec = load_spec(path)
    assert (spec.events.on_trial_type, spec.events.off_trial_type) == ("stim", "rest")
    assert "on_trial_type" not in spec.to_dict()["pathways"]


@pytest.mark.parametrize("data", [
    {"events": {"on": "stim"}},
    {"pathways": {"on_trial_type": "stim"}},
    {"events": {"on": "stim"}, "pathways": {"on_trial_type": "stim"}},
    {"events": {"on": "stim", "on_trial_type": "stim"}},
])
def test_deprecated_on_aliases_warn_and_fill_events_on_trial_type(data, caplog):
    with caplog.at_level(logging.WARNING, logger="fmri_pain.config.spec"):
        spec = spec_from_dict(data, source="old.yaml")
    assert spec.events.on_trial_type == "stim"
    assert "deprecated" in caplog.text and "events.on_trial_type" in caplog.text and "old.yaml" in caplog.text


def test_deprecated_off_alias(caplog):
    with caplog.at_level(logging.WARNING, logger="fmri_pain.config.spec"):
        assert spec_from_dict({"events": {"off": "rest"}}).events.off_trial_type == "rest"
    assert "events.off is deprecated" in caplog.text


@pytest.mark.parametrize("data, message", [
    ({"events": {"on": "stim", "on_trial_type": "on"}}, r"events\.on = 'stim'.*conflicts with events\.on_trial_type"),
    ({"events": {"on_trial_type": "on"}, "pathways": {"on_trial_type": "stim"}},
     r"pathways\.on_trial_type = 'stim'.*conflicts"),
    ({"events": {"on": "a"}, "pathways": {"on_trial_type": "b"}}, r"pathways\.on_trial_type = 'b'.*conflicts"),
    ({"events": {"off": "rest", "off_trial_type": "baseline"}}, r"events\.off.*conflicts"),
    ({"events": {"on_trial_type": "x", "off_trial_type": "x"}}, "equals events.on_trial_type"),
    ({"events": {"on": ["a"]}}, r"events\.on must be a string"),
])
def test_conflicting_aliases_are_errors(data, message):
    with pytest.raises(SpecError, match=message):
        spec_from_dict(data, source="my.yaml")


# ----------------------------------------------------------------------------- ranges
@pytest.mark.parametrize("yaml_text, key", [
    ("first_level: {smoothing_fwhm: .nan}", "first_level.smoothing_fwhm must be a finite number"),
    ("first_level: {smoothing_fwhm: -6}", r"first_level.smoothing_fwhm = -6 is out of range \(0 ≤ x ≤ 30 mm\)"),
    ("first_level: {smoothing_fwhm: 1.0e+9}", "first_level.smoothing_fwhm = 1000000000.0 is out of range"),
    ("first_level: {smoothing_fwhm: 1e9}", "first_level.smoothing_fwhm must be a number, got '1e9'"),
    ("first_level: {smoothing_fwhm: .inf}", "first_level.smoothing_fwhm must be a finite number"),
    ("first_level: {smoothing_fwhm: 1" + "0" * 400 + "}", "first_level.smoothing_fwhm must be a finite number"),
    ("preprocess: {dummy_scans: true}", "preprocess.dummy_scans must be a string or a number"),
    ("first_level: {high_pass: 0}", "first_level.high_pass = 0 is out of range"),
    ("first_level: {high_pass: -1}", "first_level.high_pass = -1 is out of range"),
    ("first_level: {slice_time_ref: 1.5}", "first_level.slice_time_ref"),
    ("first_level: {fir_delays: [0, 1, -2]}", r"first_level.fir_delays\[2\] = -2"),
    ("first_level: {confounds: {fd_threshold: 0}}", "first_level.confounds.fd_threshold"),
    ("first_level: {confounds: {n_acompcor: 0}}", "first_level.confounds.n_acompcor"),
    ("pathways: {high_pass: 0}", "pathways.high_pass = 0 is out of range"),
    ("pathways: {high_pass: .nan}", "pathways.high_pass must be a finite number"),
    ("pathways: {n_permutations: -1}", "pathways.n_permutations"),
    ("preprocess: {high_pass: 0}", "preprocess.high_pass = 0 is out of range"),
    ("preprocess: {memory_gb: .nan}", "preprocess.memory_gb must be a finite"),
    ("preprocess: {dummy_scans: .nan}", "preprocess.dummy_scans must be a finite"),
    ("preprocess: {dummy_scans: [1, 2]}", "preprocess.dummy_scans must be a string or a number"),
    ("group: {cluster_forming_z: 0}", "group.cluster_forming_z = 0 is out of range"),
    ("group: {fdr_q: 1}", r"group.fdr_q = 1 is out of range \(0 < x < 1\)"),
    ("group: {fwe_alpha: 0}", "group.fwe_alpha = 0 is out of range"),
    ("group: {smoothing_fwhm: 31}", "group.smoothing_fwhm = 31"),
    ("group: {min_cluster_size: -1}", "group.min_cluster_size"),
    ("inference: {cluster_forming_p: 2}", "inference.cluster_forming_p = 2 is out of range"),
    ("inference: {n_perm: 0}", r"inference.n_perm = 0 is out of range \(1 ≤ x ≤ 1e\+06\)"),
    ("inference: {n_perm: 1000000000}", "inference.n_perm = 1000000000 is out of range"),
    ("inference: {n_perm: 1e9}", "n_perm must be an integer"),
    ("inference: {n_jobs: 0}", "inference.n_jobs = 0 is out of range"),
    ("inference: {seed: -1}", "inference.seed"),
    ("execution: {retries: 100}", r"execution.retries = 100 is out of range \(0 ≤ x ≤ 10\)"),
    ("execution: {n_workers: 0}", "execution.n_workers"),
    ("min_volumes: 0", "min_volumes = 0"),
    ("first_level: {smoothing_fwhm: 1e-3}", r"must be a number, got '1e-3' \(YAML reads 1e-3 as text"),
])
def test_out_of_range_values_name_the_key_and_range(tmp_path, yaml_text, key):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text + "\n")
    with pytest.raises(SpecError, match=key) as info:
        load_spec(path)
    assert str(info.value).startswith(f"{path}: ")
    assert "\n" not in str(info.value)


def test_range_limits_themselves_are_accepted():
    spec = spec_from_dict({"first_level": {"smoothing_fwhm": 0, "high_pass": 1, "slice_time_ref": 1},
                           "group": {"smoothing_fwhm": 30, "min_cluster_size": 0},
                           "inference": {"n_perm": 1_000_000, "n_jobs": -1, "seed": 2**32 - 1},
                           "execution": {"retries": 0}})
    assert spec.first_level.smoothing_fwhm == 0.0 and spec.inference.n_jobs == -1
    assert spec_from_dict({"first_level": {"smoothing_fwhm": None}}).first_level.smoothing_fwhm is None


def test_range_describe():
    assert Range(0, 30, unit="mm").describe() == "0 ≤ x ≤ 30 mm"
    assert Range(0, 1, lo_open=True, hi_open=True).describe() == "0 < x < 1"
    assert Range(1).describe() == "x ≥ 1"
    assert Range(1, 1024, also=(-1,)).describe() == "-1 or 1 ≤ x ≤ 1024"
    assert -1 in Range(1, 1024, also=(-1,)) and 0 not in Range(1, 1024, also=(-1,))
    assert 0 not in Range(0, 1, lo_open=True) and 1 in Range(0, 1)
    assert float("nan") not in Range() and float("inf") not in Range(0)


def test_command_line_execution_options_are_range_checked_too():
    import argparse

    from fmri_pain.cli import execution_spec_from_args

    args = argparse.Namespace(retries=99)
    with pytest.raises(SpecError, match=r"execution.retries = 99 is out of range \(0 ≤ x ≤ 10\)"):
        execution_spec_from_args(AnalysisSpec(), args)
    assert execution_spec_from_args(AnalysisSpec(), argparse.Namespace(retries=3)).execution.retries == 3


# ----------------------------------------------------------------------------- hostile spec files
def _billion_laughs(where: str) -> str:
    """A YAML alias bomb (9**8 'lol's once expanded) as the value of ``where``."""
    lines = ["- &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]"]
    for prev, name in zip("abcdefg", "bcdefgh"):
        refs = ",".join([f"*{prev}"] * 9)
        lines.append(f"- &{name} [{refs}]" if name != "h" else f"- [{refs}]")
    *sections, key = where.split(".")
    indent = "  " * len(sections)
    head = "".join(f"{'  ' * i}{section}:\n" for i, section in enumerate(sections))
    return head + f"{indent}{key}:\n" + "".join(f"{indent}  {line}\n" for line in lines)


@pytest.mark.parametrize("where", ["task", "group.covariates", "first_level.contrasts",
                                   "preprocess.dummy_scans", "pathways.atlas", "events.on_trial_type",
                                   "first_level.confounds.fd_threshold"])
def test_yaml_alias_bomb_gives_a_short_error_quickly(tmp_path, where):
    text = _billion_laughs(where)
    if where == "task":
        assert 300 <= len(text.encode()) <= 340  # the 330-byte probe of issue 16
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(SpecError) as info:
            load_spec(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 2.0
    assert peak < 20e6
    message = str(info.value)
    assert len(message) < 600 and message.startswith(f"{path}: {where}") and " must be " in message
    assert "lol" in message  # the value is echoed, cut short


def test_spec_file_that_is_not_utf8_is_one_line_naming_it(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("task: douleur\ngroup: {covariates: [âge]}\n".encode("latin-1"))
    with pytest.raises(SpecError, match=r"latin1\.yaml is not UTF-8") as info:
        load_spec(path)
    assert "\n" not in str(info.value)
    bom = tmp_path / "bom.yaml"
    bom.write_bytes("task: stim\n".encode("utf-8-sig"))
    assert load_spec(bom).task == "stim"


def test_other_yaml_errors_are_spec_errors(tmp_path):
    for text in ("a: 2001-13-45\n", "[" * 1000, "? [a, b]\n: c\n", "x: !!python/object:os.system {}\n"):
        path = tmp_path / "odd.yaml"
        path.write_text(text)
        with pytest.raises(SpecError, match="odd.yaml"):
            load_spec(path)


def test_missing_and_huge_spec_files(tmp_path):
    with pytest.raises(SpecError, match="cannot read analysis spec"):
        load_spec(tmp_path / "nope.yaml")
    big = tmp_path / "big.yaml"
    big.write_text("task: stim\n" + "#" * 1_100_000)
    with pytest.raises(SpecError, match="larger than 1 MB"):
        load_spec(big)


def test_echoed_values_are_cut():
    with pytest.raises(SpecError) as info:
        spec_from_dict({"task": ["x" * 10_000] * 1000, })
    assert len(str(info.value)) < 400
    with pytest.raises(SpecError) as info:
        spec_from_dict({"x" * 100_000: 1})
    assert len(str(info.value)) < 2000


@pytest.mark.parametrize("data, message", [
    ({"task": "stim-rest"}, "task = 'stim-rest' must be letters and digits"),
    ({"space": "MNI/../x"}, "space"),
    ({"conditions": []}, "at least one condition"),
    ({"conditions": ["SCS", "scs"]}, "repeat a name"),
    ({"conditions": ["SCS", "D RGS"]}, r"conditions\[1\]"),
    ({"first_level": {"contrasts": {1: "on"}}}, "not a string"),
])
def test_labels_that_become_file_names(data, message):
    with pytest.raises(SpecError, match=message):
        spec_from_dict(data, source="my.yaml")


# ----------------------------------------------------------------------------- contrasts at load time
EXPLOIT = "on.to_csv('{target}', header=['pwned'], index=False)"


def test_contrast_exploit_is_a_spec_error_naming_the_contrast(tmp_path):
    target = tmp_path / "written.txt"
    path = tmp_path / "evil.yaml"
    path.write_text(f'first_level:\n  contrasts:\n    evil: "{EXPLOIT.format(target=target)}"\n')
    with pytest.raises(SpecError, match=r"evil\.yaml: first_level\.contrasts\.evil = .*not allowed"):
        load_spec(path)
    assert not target.exists()


def test_contrast_exploit_through_the_cli_exits_2_and_writes_nothing(tmp_path, capsys):
    from fmri_pain.cli import main

    target = tmp_path / "written.txt"
    spec = tmp_path / "evil.yaml"
    spec.write_text(f'first_level:\n  contrasts:\n    evil: "{EXPLOIT.format(target=target)}"\n')
    bids = tmp_path / "bids"
    bids.mkdir()
    out = tmp_path / "out"
    assert main([str(bids), str(out), "participant", "--spec", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "first_level.contrasts.evil" in err and "evil.yaml" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not target.exists() and not out.exists()


@pytest.mark.parametrize("contrasts, message", [
    ({"bad": "on * off"}, r"first_level\.contrasts\.bad = 'on \* off': product"),
    ({"bad": "on + 1"}, "constant term"),
    ({"bad": ""}, "empty"),
    ({"bad": 3}, r"first_level\.contrasts\.bad must be a string"),
    ({"on-off": "on - off"}, "contrast name 'on-off' must be letters and digits"),
    ({"stim": "on"}, "'stim' is a built-in contrast name"),
    ({"dualMinusScs": "on"}, "'dualMinusScs' is a built-in"),
    ({"scs": "on"}, "'scs' is a built-in"),
])
def test_invalid_contrasts_fail_at_load_time(contrasts, message):
    with pytest.raises(SpecError, match=message):
        spec_from_dict({"first_level": {"contrasts": contrasts}}, source="my.yaml")


def test_valid_contrast_loads():
    spec = spec_from_dict({"first_level": {"contrasts": {"faceMinusHouse": "(face - house) / 2"}}})
    assert spec.first_level.contrasts == {"faceMinusHouse": "(face - house) / 2"}


def test_contrast_needing_a_trial_type_the_run_lacks_is_an_input_error_naming_the_events_file(tmp_path):
    from fmri_pain.errors import InputError
    from fmri_pain.glm.first_level.events import contrast_weights
    from fmri_pain.bids.runs import Run

    events = tmp_path / "sub-01_task-stim_events.tsv"
    run = Run(subject="01", session=None, condition="stim", period=None, task="stim", run=1,
              bold=tmp_path / "bold.nii.gz", events=events, mask=None, confounds=None,
              metadata={"RepetitionTime": 2.0})
    spec = spec_from_dict({"first_level": {"contrasts": {"onMinusRating": "on - rating"}}})
    weights = contrast_weights(["on", "rating"], spec.events, spec.first_level.contrasts, run)
    assert weights["onMinusRating"] == {"on": 1.0, "rating": -1.0}
    with pytest.raises(InputError, match="onMinusRating.*'rating' not among") as info:
        contrast_weights(["on", "off"], spec.events, spec.first_level.contrasts, run)
    assert info.value.path == events and info.value.subject == "01"


@pytest.mark.parametrize("data, message", [
    ({"execution": {"memory_per_worker": "lots"}}, "execution.memory_per_worker = 'lots' is not a size"),
    ({"execution": {"job_memory": "-8GiB"}}, "execution.job_memory"),
    ({"execution": {"walltime": "2 hours"}}, r"execution.walltime = '2 hours' is not \[D-\]HH"),
    ({"pathways": {"hrf_model": "gamma"}}, "pathways.hrf_model = 'gamma' is not one of spm"),
    ({"pathways": {"drift_model": "linear"}}, "pathways.drift_model = 'linear' is not one of cosine, polynomial, none"),
    ({"pathways": {"atlas": "/no/such/atlas.tsv"}}, "pathways.atlas = '/no/such/atlas.tsv' is not a file"),
])
def test_string_forms_are_checked_at_load_time(data, message):
    with pytest.raises(SpecError, match=message):
        spec_from_dict(data, source="my.yaml")


@pytest.mark.parametrize("size", ["4GiB", "4 GiB", "500MB", "8gb", "1.5GiB", "4G", "1000000"])
def test_memory_sizes_accepted_are_those_dask_parses(size):
    from dask.utils import parse_bytes

    assert spec_from_dict({"execution": {"memory_per_worker": size}}).execution.memory_per_worker == size
    assert parse_bytes(size) > 0
    assert spec_from_dict({"execution": {"walltime": "1-12:00:00"}}).execution.walltime == "1-12:00:00"


def test_ppi_seeds_and_fir_delays_are_checked_at_load_time():
    assert spec_from_dict({"pathways": {"ppi_seeds": ["S1_leg", "thal_VPL_VPM"]}}).pathways.ppi_seeds == (
        "S1_leg", "thal_VPL_VPM")
    with pytest.raises(SpecError, match=r"pathways.ppi_seeds \['S1_foot'\] are not nodes of the atlas"):
        spec_from_dict({"pathways": {"ppi_seeds": ["S1_leg", "S1_foot"]}}, source="my.yaml")
    with pytest.raises(SpecError, match="fir_delays must list distinct delays"):
        spec_from_dict({"first_level": {"hrf_model": "fir", "fir_delays": [0, 1, 1]}})
    with pytest.raises(SpecError, match="fir_delays must list distinct delays"):
        spec_from_dict({"first_level": {"hrf_model": "fir", "fir_delays": []}})


@pytest.mark.parametrize("trial_mode", [True, False])
def test_layout_validation_finds_a_contrast_trial_type_a_run_lacks_before_any_fit(tmp_path, trial_mode):
    from fmri_pain.bids import checks
    from fmri_pain.bids import readers as _bids

    func = tmp_path / "sub-01" / "func"
    func.mkdir(parents=True)
    (tmp_path / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.8.0"}')
    bold = func / "sub-01_task-stim_bold.nii.gz"
    bold.write_bytes(b"")
    events = func / "sub-01_task-stim_events.tsv"
    events.write_text("onset\tduration\ttrial_type\n0\t10\ton\n20\t2\trating\n")
    files = _bids.index(tmp_path).get(suffix="events", extension=".tsv")

    def attach(contrasts):
        spec = spec_from_dict({"first_level": {"contrasts": contrasts}})
        c = checks.Candidate(subject="01", session=None, task="stim", run=None, raw_bold=bold,
                             ents={"subject": "01", "task": "stim"})
        checks.attach_events(c, files, tmp_path, spec, trial_mode)
        return c.errors

    assert attach({"onMinusRating": "on - rating"}) == []
    (error,) = attach({"onMinusRating": "on - rating", "faceMinusHouse": "face - 0.5 * (house + rating)"})
    assert error.path == events and error.subject == "01"
    assert "contrast 'faceMinusHouse' of the spec needs trial type(s) 'face', 'house'" in str(error)


def test_a_key_written_twice_is_an_error_not_the_last_one_wins(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("first_level:\n  smoothing_fwhm: 4\n  smoothing_fwhm: 8\n")
    with pytest.raises(SpecError, match=r"dup\.yaml: key 'smoothing_fwhm' is written twice at line 3"):
        load_spec(path)
    path.write_text("inference:\n  <<: {n_perm: 10, seed: 1}\n  seed: 2\n")  # a merge key may be overridden
    assert (load_spec(path).inference.n_perm, load_spec(path).inference.seed) == (10, 2)


# ----------------------------------------------------------------------------- one unit per key
def test_every_high_pass_key_is_in_hz_and_an_old_period_in_seconds_is_refused(tmp_path):
    spec = AnalysisSpec()
    assert spec.preprocess.high_pass == spec.first_level.high_pass == 1 / 128
    assert spec.preprocess.high_pass_period == 128.0  # what the confounds stage receives, as before
    assert spec_from_dict({"preprocess": {"high_pass": 0.01}}).preprocess.high_pass_period == pytest.approx(100.0)
    path = tmp_path / "old.yaml"
    path.write_text("preprocess:\n  high_pass: 100\n")
    with pytest.raises(SpecError, match=r"old\.yaml: preprocess\.high_pass = 100 is a period in seconds, but "
                                        r"the key is in Hz now .*write 0\.01 ") as info:
        load_spec(path)
    assert "\n" not in str(info.value)


def test_preprocessing_confounds_node_gets_the_period_in_seconds():
    from fmri_pain.config.preprocess import PreprocessSpec
    from fmri_pain.preprocess.workflows import init_func_preproc_wf

    for hz, seconds in ((1 / 128, 128.0), (0.01, 100.0)):
        wf = init_func_preproc_wf(PreprocessSpec(high_pass=hz), has_t1w=True)
        assert wf.get_node("confounds").inputs.high_pass == pytest.approx(seconds)


def test_pathway_design_keys_default_to_the_first_levels():
    spec = spec_from_dict({"first_level": {"hrf_model": "glover", "drift_model": "polynomial", "high_pass": 0.01}})
    assert (spec.pathways.hrf_model, spec.pathways.drift_model, spec.pathways.high_pass) == (None, None, None)
    resolved = spec.pathways.with_design_of(spec.first_level)
    assert (resolved.hrf_model, resolved.drift_model, resolved.high_pass) == ("glover", "polynomial", 0.01)
    own = spec_from_dict({"first_level": {"high_pass": 0.01},
                          "pathways": {"hrf_model": "spm", "drift_model": "none", "high_pass": 0.02}})
    resolved = own.pathways.with_design_of(own.first_level)
    assert (resolved.hrf_model, resolved.drift_model, resolved.high_pass) == ("spm", "none", 0.02)
    assert resolved.with_design_of(spec.first_level) == resolved  # a resolved section stays as it is


def test_several_bad_keys_give_the_first_and_a_count_on_one_line():
    with pytest.raises(SpecError) as info:
        spec_from_dict({"group": {"fdr_q": -1, "fwe_alpha": 2}, "inference": {"n_perm": "many"}}, source="my.yaml")
    message = str(info.value)
    assert message == ("my.yaml: group.fdr_q = -1 is out of range (0 < x < 1) "
                       "(and 2 more key(s) in error)")
