"""BIDS filter files (fMRIPrep's format) and session labels: parsing, matching, and the runs a layout keeps."""

import json

import pytest

from fmri_pain.bids.filters import (ANY, RunSelection, parse_bids_filters, read_bids_filter_file,
                                    run_selection, session_labels)
from fmri_pain.bids.layout import load_layout
from fmri_pain.errors import InputError
from tests.bids.test_layout import write_trial


@pytest.fixture(scope="module")
def trial(tmp_path_factory):
    return write_trial(tmp_path_factory.mktemp("filters"))


def test_values_lists_null_and_any():
    sel = parse_bids_filters({"bold": {"session": ["scs", "dual"], "run": "01", "acquisition": None,
                                       "task": "*"}})
    assert sel.bold.entities == {"session": ("scs", "dual"), "run": (1,), "acquisition": (None,),
                                 "task": (ANY,)}
    keep = {"subject": "01", "session": "dual", "task": "stim", "run": 1}
    assert sel.keeps_bold(keep)
    assert not sel.keeps_bold({**keep, "session": "drgs"})
    assert not sel.keeps_bold({**keep, "run": 2})
    assert not sel.keeps_bold({**keep, "acquisition": "fast"})  # null: the entity must be absent
    assert not sel.keeps_bold({k: v for k, v in keep.items() if k != "task"})  # "*": present
    assert sel.keeps_t1w({"subject": "01"})  # no t1w query: every T1w


def test_session_labels_with_or_without_prefix():
    assert session_labels(["ses-scs", "dual", "scs"]) == ("scs", "dual")
    sel = run_selection(None, ["ses-DUAL"])
    assert sel.keeps_bold({"session": "DUAL"}) and not sel.keeps_bold({"session": "dual"})
    assert not sel.keeps_bold({"subject": "01"})  # session-less runs are not a selected session
    with pytest.raises(InputError, match="not alphanumeric"):
        session_labels(["ses-../x"])
    assert not RunSelection().active and run_selection(None, None) == RunSelection()


@pytest.mark.parametrize("content, message", [
    ("{\"bold\": {\"session\": [\"scs\"]", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ("{\"bold\": {\"sesion\": \"scs\"}}", "unknown entity 'sesion'"),
    ("{\"func\": {\"session\": \"scs\"}}", "unknown query 'func'"),
    ("{\"bold\": [\"scs\"]}", "must be an object"),
    ("{\"bold\": {\"session\": 1.5}}", "has value 1.5"),
    ("{\"bold\": {\"run\": \"one\"}}", "takes integers"),
    ("{\"bold\": {\"session\": \"ses-scs\"}}", "without 'ses-'"),
    ("{\"bold\": {\"session\": []}}", "empty list"),
    ("{\"bold\": {\"suffix\": \"bold\"}}", "entities only"),
])
def test_malformed_filter_file_is_one_line_naming_the_file(tmp_path, content, message):
    path = tmp_path / "filter.json"
    path.write_text(content)
    with pytest.raises(InputError, match=message) as exc:
        read_bids_filter_file(path)
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)


def test_missing_filter_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_bids_filter_file(tmp_path / "nope.json")


def test_queries_of_files_never_read_are_recorded_as_ignored(tmp_path):
    path = tmp_path / "f.json"
    path.write_text(json.dumps({"fmap": {"acquisition": "x"}, "sbref": {}, "bold": {"run": 1}}))
    sel = read_bids_filter_file(path)
    assert sel.ignored == ("fmap", "sbref") and sel.source == path


def test_layout_keeps_only_the_selected_runs(trial, tmp_path):
    bids, deriv = trial
    path = tmp_path / "filter.json"
    path.write_text(json.dumps({"bold": {"session": ["scs", "dual"]}, "fmap": {"run": 1}}))
    full = load_layout(bids, deriv, check_data=False)
    layout = load_layout(bids, deriv, check_data=False, selection=run_selection(path))
    assert len(full.runs) == 9
    assert sorted((r.subject, r.session) for r in layout.runs) == sorted(
        (r.subject, r.session) for r in full.runs if r.session in ("scs", "dual"))
    assert layout.errors == []
    kinds = sorted((n["subject"] or "", n["kind"]) for n in layout.notes)
    # the left-out DRGS sessions are "not selected", not drop-outs; the ignored query is noted
    assert kinds == [("", "ignored filter"), ("", "selection")] + [(s, "not selected") for s in ("01", "02", "03")]
    assert any(n["message"].startswith("6 of 9 BOLD runs selected") for n in layout.notes)
    assert all("DRGS" in n["message"] for n in layout.notes if n["kind"] == "not selected")


def test_layout_session_labels_and_t1w_query(trial, tmp_path):
    bids, deriv = trial
    layout = load_layout(bids, deriv, check_data=False,
                         selection=run_selection(None, ["ses-drgs", "nosuch"]))
    assert {r.session for r in layout.runs} == {"drgs"} and len(layout.runs) == 3
    assert [e.reason for e in layout.errors] == [
        "session label 'nosuch' not found; available: drgs, dual, scs"]
    # every subject's T1w is in its first session; a t1w query for the scs session leaves only sub-01's
    path = tmp_path / "t1w.json"
    path.write_text(json.dumps({"t1w": {"session": "scs"}}))
    anat = {r.subject: r.anat for r in load_layout(bids, deriv, check_data=False,
                                                  selection=run_selection(path)).runs}
    assert anat["01"] is not None and "ses-scs" in anat["01"].name
    assert anat["02"] is None and anat["03"] is None


def test_selection_that_leaves_nothing_raises(trial):
    bids, deriv = trial
    with pytest.raises(InputError, match="no BOLD run is selected.*sessions in the dataset: drgs, dual, scs"):
        load_layout(bids, deriv, check_data=False, selection=run_selection(None, ["nosuch"]))


def test_requested_subject_without_selected_runs_is_an_error(trial, tmp_path):
    bids, deriv = trial
    path = tmp_path / "f.json"
    path.write_text(json.dumps({"bold": {"subject": "01"}}))
    layout = load_layout(bids, deriv, check_data=False, selection=run_selection(path),
                         participant_label=["01", "02"])
    assert layout.subjects == ["01"]
    assert [(e.subject, "selected" in e.reason) for e in layout.errors] == [("02", True)]
    quiet = load_layout(bids, deriv, check_data=False, selection=run_selection(path))
    assert quiet.errors == [] and {n["subject"] for n in quiet.notes if n["kind"] == "not selected"} == {"02", "03"}


def test_outputs_of_left_out_sessions_are_found(tmp_path):
    from types import SimpleNamespace

    from fmri_pain.bids.filters import left_out_session_outputs

    for ses in ("scs", "drgs", "dual"):
        func = tmp_path / "sub-01" / f"ses-{ses}" / "func"
        func.mkdir(parents=True)
        if ses != "dual":  # ses-dual holds no map
            (func / f"sub-01_ses-{ses}_task-stim_contrast-stim_stat-z_statmap.nii.gz").write_bytes(b"")
    runs = [SimpleNamespace(subject="01", session="scs"), SimpleNamespace(subject="02", session="scs")]
    assert left_out_session_outputs(tmp_path, runs) == [tmp_path / "sub-01" / "ses-drgs"]
    runs.append(SimpleNamespace(subject="01", session="drgs"))
    assert left_out_session_outputs(tmp_path, runs) == []
