"""Hypothesis fuzzing of everything a user hands the toolkit (issue 16 item 8).

Random and adversarial specs (nested values, YAML text, raw bytes) and TSV files
(events, sessions, participants) never produce a traceback: only a
:class:`SpecError` naming the file, or an :class:`InputError` naming the file
(and subject), or a valid result. Example counts are modest and the runs are
deterministic (``derandomize=True``), so the suites are fast and stable in CI;
``FMRI_PAIN_FUZZ_EXAMPLES=5000`` runs a deeper search.
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fmri_pain.errors import InputError
from fmri_pain.config.fields import SpecError
from fmri_pain.config.spec import AnalysisSpec, load_spec, spec_from_dict

FUZZ = settings(max_examples=int(os.environ.get("FMRI_PAIN_FUZZ_EXAMPLES", 150)), derandomize=True,
                deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


# ----------------------------------------------------------------------------- spec values
def _keys(cls: type) -> dict[str, typing.Any]:
    """Nested {key: sub-dict or None} of the spec sections."""
    hints = typing.get_type_hints(cls)
    return {f.name: (_keys(hints[f.name]) if dataclasses.is_dataclass(hints[f.name]) else None)
            for f in dataclasses.fields(cls)}


SPEC_KEYS = _keys(AnalysisSpec)
SPEC_KEYS["events"].update({"on": None, "off": None})        # deprecated aliases
SPEC_KEYS["pathways"]["on_trial_type"] = None

_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12), st.integers(), st.integers(10**300, 10**400),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.sampled_from(["on", "off", "stim", "auto", "motion24", "spm", "cosine", "local", "SCS",
                     "on - off", "on * off", "on.to_csv('x')", "1e-3", "", "nan", "-1"]),
)
_VALUES = st.recursive(_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.text(max_size=8), st.integers()),
                                                 inner, max_size=4)), max_leaves=12)


def _spec_dicts(keys: dict) -> st.SearchStrategy:
    """Dicts over the real keys (so the fuzz reaches deep), with random values and stray keys."""
    entries = {name: (st.one_of(_spec_dicts(sub), _VALUES) if sub is not None else _VALUES)
               for name, sub in keys.items()}
    real = st.lists(st.sampled_from(sorted(entries)), unique=True, max_size=4).flatmap(
        lambda names: st.fixed_dictionaries({n: entries[n] for n in names}))
    stray = st.dictionaries(st.one_of(st.text(max_size=10), st.booleans(), st.integers(), st.none()),
                            _VALUES, max_size=2)
    return st.one_of(real, real, st.tuples(real, stray).map(lambda t: {**t[1], **t[0]}))


def _assert_spec_error(exc: SpecError, source: str) -> None:
    message = str(exc)
    assert message.startswith(source) or source in message, message
    assert len(message) < 2500, len(message)


@FUZZ
@given(_spec_dicts(SPEC_KEYS))
def test_spec_from_random_nested_dicts_is_a_spec_or_a_spec_error(data):
    try:
        spec = spec_from_dict(data, source="fuzz.yaml")
    except SpecError as exc:
        _assert_spec_error(exc, "fuzz.yaml")
        return
    assert isinstance(spec, AnalysisSpec)
    _assert_finite(spec.to_dict())


def _assert_finite(value) -> None:
    if isinstance(value, dict):
        for v in value.values():
            _assert_finite(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _assert_finite(v)
    elif isinstance(value, float):
        assert math.isfinite(value)


_YAML_PIECES = st.sampled_from([
    "task: ", "events:\n  ", "on: ", "on_trial_type: ", "first_level:\n  contrasts:\n    c: ",
    "inference: {n_perm: ", "}", "]", "[", "{", ": ", "- ", "\n", "  ", "&a ", "*a", "*b", "!!str ",
    "!!python/object/apply:os.system ['id']", "!!binary ", ".nan", ".inf", "-.inf", "1e9", "1.0e+9",
    "0x1F", "0o17", "2001-12-14", "2001-13-45", "~", "yes", "no", "<<: ", "? ", "'", '"', "#",
    "\t", "%YAML 1.1\n", "---\n", "...\n", "\ufeff", "é", "\x00", "\x85", "\u2028",
])


@FUZZ
@given(st.one_of(st.text(max_size=200), st.lists(_YAML_PIECES, max_size=30).map("".join)))
def test_spec_file_from_random_yaml_text_is_a_spec_or_a_spec_error(tmp_path, text):
    path = tmp_path / "fuzz.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_spec(path)
    except SpecError as exc:
        _assert_spec_error(exc, str(path))


@FUZZ
@given(st.binary(max_size=200))
def test_spec_file_from_random_bytes_is_a_spec_or_a_spec_error(tmp_path, raw):
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(raw)
    try:
        load_spec(path)
    except SpecError as exc:
        _assert_spec_error(exc, str(path))


# ----------------------------------------------------------------------------- TSV readers
_CELLS = st.sampled_from([
    "onset", "duration", "trial_type", "on", "off", "0", "10", "-1", "1e400", "nan", "n/a", "N/A",
    "", " ", "inf", "-inf", "1,5", "0x10", "sub-01", "sub-", "sub-0/1", "ses-scs", "ses-01",
    "participant_id", "session_id", "condition", "period", "sequence", "SCS", "DRGS-SCS-DUAL",
    "SCS-SCS-DUAL", '"', "'", "\\", "é", "\x00", "\r", "#", "1", "2", "3", "modulation", "abc",
])
_ROW = st.lists(_CELLS, min_size=1, max_size=5).map("\t".join)
_TSV = st.one_of(
    st.binary(max_size=300),
    st.lists(_ROW, max_size=6).map(lambda rows: "\n".join(rows).encode("utf-8", "surrogatepass")),
    st.tuples(st.sampled_from(["onset\tduration\ttrial_type", "participant_id\tsequence\tage",
                               "session_id\tcondition\tperiod", "onset\tduration"]),
              st.lists(_ROW, max_size=5)).map(lambda t: "\n".join([t[0], *t[1]]).encode()),
)


def _assert_input_error(exc: InputError, path: Path) -> None:
    assert exc.path == path or str(path) in str(exc), str(exc)


@FUZZ
@given(_TSV)
def test_read_events_random_tsv_is_events_or_an_input_error(tmp_path, raw):
    from fmri_pain.glm.first_level.events import read_events

    path = tmp_path / "sub-01_task-stim_events.tsv"
    path.write_bytes(raw)
    try:
        events = read_events(path, subject="01")
    except InputError as exc:
        _assert_input_error(exc, path)
        assert exc.subject == "01"
        return
    assert list(events.columns[:3]) == ["onset", "duration", "trial_type"] and len(events)
    assert pd.api.types.is_float_dtype(events["onset"]) and pd.api.types.is_float_dtype(events["duration"])


@FUZZ
@given(_TSV, _TSV)
def test_participants_and_sessions_readers_collect_input_errors(tmp_path, participants, sessions):
    from fmri_pain.bids import sessions as bids_sessions

    bids = tmp_path / "bids"
    (bids / "sub-01").mkdir(parents=True, exist_ok=True)
    (bids / "participants.tsv").write_bytes(participants)
    (bids / "sub-01" / "sub-01_sessions.tsv").write_bytes(sessions)
    errors: list[InputError] = []
    table = bids_sessions.read_participants(bids, errors)
    assert isinstance(table, dict)
    for exc in errors:
        assert isinstance(exc, InputError) and exc.path == bids / "participants.tsv"
    info = bids_sessions.read_sessions(bids, "01")
    for exc in info.errors:
        assert isinstance(exc, InputError) and exc.subject == "01"
        assert exc.path == bids / "sub-01" / "sub-01_sessions.tsv"


_SESSIONS_TSV = st.tuples(
    st.sampled_from(["session_id\tcondition\tperiod", "session_id\tperiod", "session_id\tcondition",
                     "session_id\tcondition\tperiod\tvas_pain"]),
    st.lists(st.lists(st.sampled_from(["ses-scs", "ses-drgs", "ses-dual", "ses-01", "scs", "ses-",
                                       "SCS", "dual", "DRGS", "pain", "1", "2", "3", "0", "-1", "1.5",
                                       "2.0", "n/a", "", "1e400", "x"]),
                       min_size=1, max_size=4).map("\t".join), max_size=4),
).map(lambda t: "\n".join([t[0], *t[1]]).encode())
_PARTICIPANTS_TSV = st.tuples(
    st.sampled_from(["participant_id\tsequence", "participant_id\tsequence\tpain_side"]),
    st.lists(st.tuples(st.sampled_from(["sub-01", "sub-1", "01", "sub-01 "]),
                       st.sampled_from(["SCS-DRGS-DUAL", "DUAL-SCS", "scs,dual,drgs", "SCS-SCS-DUAL",
                                        "SCS-PAIN", "-", "", "n/a", "1-2-3", "SCS//DUAL"]),
                       st.sampled_from(["left", "right", "n/a", "", "1"])
                       ).map("\t".join), max_size=3),
).map(lambda t: "\n".join([t[0], *t[1]]).encode())


@FUZZ
@given(st.one_of(_PARTICIPANTS_TSV, _TSV), st.one_of(_SESSIONS_TSV, _TSV),
       st.sampled_from(["scs", "drgs", "dual", "01", None]), st.booleans())
def test_condition_and_period_from_random_tables_are_values_or_input_errors(
        tmp_path, participants, sessions, session, trial_mode):
    from fmri_pain.bids import checks
    from fmri_pain.bids import sessions as bids_sessions

    bids = tmp_path / "bids"
    (bids / "sub-01").mkdir(parents=True, exist_ok=True)
    (bids / "participants.tsv").write_bytes(participants)
    (bids / "sub-01" / "sub-01_sessions.tsv").write_bytes(sessions)
    spec = AnalysisSpec()
    errors: list[InputError] = []
    prow = bids_sessions.read_participants(bids, errors).get("01", {})
    sess = bids_sessions.read_sessions(bids, "01")
    sequence = bids_sessions.subject_sequence("01", prow, spec, trial_mode, bids, errors)
    c = checks.Candidate(subject="01", session=session, task="stim", run=None,
                         raw_bold=bids / "sub-01" / "func" / "sub-01_task-stim_bold.nii.gz",
                         ents={"subject": "01"}, sequence=sequence)
    bids_sessions.assign_condition(c, sess, spec, trial_mode, bids)
    for exc in errors + sess.errors + c.errors:
        assert isinstance(exc, InputError) and exc.path is not None, exc
    if not c.errors:
        assert c.condition in ((*spec.conditions,) if trial_mode else ("stim",))
        assert c.period is None or (isinstance(c.period, int) and c.period >= 1)


@pytest.fixture(scope="module")
def tiny_bids(tmp_path_factory):
    """One raw run (an empty image: only the events are read here) and its pybids index."""
    from fmri_pain.bids import readers as _bids

    root = tmp_path_factory.mktemp("fuzz-bids")
    (root / "dataset_description.json").write_text('{"Name": "fuzz", "BIDSVersion": "1.8.0"}')
    func = root / "sub-01" / "func"
    func.mkdir(parents=True)
    bold = func / "sub-01_task-stim_bold.nii.gz"
    bold.write_bytes(b"")
    events = func / "sub-01_task-stim_events.tsv"
    events.write_text("onset\tduration\ttrial_type\n0\t10\ton\n")
    raw = _bids.index(root)
    return root, bold, events, raw.get(suffix="events", extension=".tsv")


@FUZZ
@given(_TSV, st.booleans())
def test_layout_events_validation_random_tsv(tiny_bids, raw, trial_mode):
    from fmri_pain.bids import checks

    root, bold, events, files = tiny_bids
    events.write_bytes(raw)
    c = checks.Candidate(subject="01", session=None, task="stim", run=None, raw_bold=bold,
                         ents={"subject": "01", "task": "stim"})
    checks.attach_events(c, files, root, AnalysisSpec(), trial_mode)
    for exc in c.errors:
        assert isinstance(exc, InputError) and exc.subject == "01" and exc.path == events
    if not c.errors:
        df = c.events_df
        assert df is not None and len(df) and {"onset", "duration", "trial_type"} <= set(df.columns)
        assert (df["onset"] >= 0).all() and (df["duration"] >= 0).all()
