"""The model that ran is the model reported: group decisions, sidecars, methods and citations.

Small synthetic subject maps (6 x 6 x 6 voxels) with the sidecars the first level
writes, so every group-level decision can be provoked in a second.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import stats

from fmri_pain.errors import InputError
from fmri_pain.glm.second_level.collect import collect_subject_maps, first_level_fingerprint
from fmri_pain.bids.runs import Run
from fmri_pain.report.group import write_group_report
from fmri_pain.report.methods import (MethodsSection, bibliography, cited_keys, citation_bibtex,
                                      first_level_section, group_section)
from fmri_pain.config.spec import AnalysisSpec, spec_from_dict
from fmri_pain.trial import williams_sequences
from tests.support.group import run_group_glm

SPACE = "MNI152NLin2009cAsym"
SHAPE = (6, 6, 6)
AFFINE = np.array([[4.0, 0, 0, -10], [0, 4, 0, -10], [0, 0, 4, -10], [0, 0, 0, 1]])  # x symmetric
DIFFERENCES = {"drgsMinusScs": {"DRGS": 1, "SCS": -1}, "dualMinusScs": {"DUAL": 1, "SCS": -1},
               "dualMinusDrgs": {"DUAL": 1, "DRGS": -1},
               "dualMinusMean": {"DUAL": 1, "SCS": -0.5, "DRGS": -0.5}}
CAMEL = re.compile(r"^[A-Z][A-Za-z0-9]*$")


def _recorded(spec: AnalysisSpec) -> dict:
    d = spec.to_dict()
    return {"first_level": d["first_level"], "events": d["events"], "ar_bins": 100}


def _write_map(out: Path, subject: str, contrast: str, effect: np.ndarray, params: dict) -> None:
    folder = out / f"sub-{subject}" / "func"
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"sub-{subject}_task-stim_space-{SPACE}_contrast-{contrast}"
    for stat, data in (("effect", effect), ("variance", np.full(SHAPE, 0.5)),
                       ("z", effect / np.sqrt(0.5))):
        nib.save(nib.Nifti1Image(data.astype(np.float32), AFFINE), folder / f"{stem}_stat-{stat}_statmap.nii.gz")
        (folder / f"{stem}_stat-{stat}_statmap.json").write_text(json.dumps(
            {"Parameters": {**params, "weights": {"on": 1.0}}, "Contrast": contrast}))


def _run(out: Path, subject: str, condition: str, period: int | None, session: str | None,
         sequence: str | None = None, **covariates) -> Run:
    return Run(subject=subject, session=session, condition=condition, period=period, task="stim",
               run=None, bold=out / "bold.nii.gz", events=None, mask=None, confounds=None,
               metadata={"RepetitionTime": 2.0}, sequence=sequence, covariates=covariates)


def make_trial(out: Path, n_subjects: int, spec: AnalysisSpec, *, sequences=None, covariate=None,
               pain_side=None, extra_contrasts=(), params_of=None, seed=0) -> list[Run]:
    """Subject maps of a crossover trial (per condition and differences) with their runs."""
    rng = np.random.default_rng(seed)
    sequences = sequences or [williams_sequences()[i % 6] for i in range(n_subjects)]
    truth = {"SCS": 1.0, "DRGS": 1.5, "DUAL": 2.5}
    runs = []
    for i in range(n_subjects):
        sub = f"{i + 1:02d}"
        params = (params_of or (lambda s: _recorded(spec)))(sub)
        effects = {}
        for period, cond in enumerate(sequences[i], start=1):
            effects[cond] = truth[cond] + 0.2 * period + rng.normal(0, 1, SHAPE) + rng.normal()
            _write_map(out, sub, cond.lower(), effects[cond], params)
            cov = {} if covariate is None else {"pain_relief": covariate(sub, cond)}
            side = {} if pain_side is None else {"pain_side": pain_side(sub)}
            runs.append(_run(out, sub, cond, period, cond.lower(), "-".join(sequences[i]),
                             **cov, **side))
        for name, weights in DIFFERENCES.items():
            _write_map(out, sub, name, sum(w * effects[c] for c, w in weights.items()), params)
        for name in extra_contrasts:
            _write_map(out, sub, name, rng.normal(0, 1, SHAPE), params)
    return runs


def make_one_condition(out: Path, n_subjects: int, spec: AnalysisSpec, **covariates) -> list[Run]:
    """A generic one-condition study: no sessions, one 'stim' map per subject."""
    rng = np.random.default_rng(1)
    runs = []
    for i in range(n_subjects):
        sub = f"{i + 1:02d}"
        _write_map(out, sub, "stim", 1.0 + rng.normal(0, 1, SHAPE), _recorded(spec))
        runs.append(_run(out, sub, "stim", None, None,
                         **{k: v[i] for k, v in covariates.items()}))
    return runs


def test_one_condition_study_with_complete_integer_covariates(tmp_path):
    """Subject-level columns without gaps (participants.tsv ``age``) pass through untouched."""
    spec = spec_from_dict({"events": {"on_trial_type": "stim"}, "inference": {"enabled": False},
                           "pathways": {"enabled": False}})
    ages = [31, 45, 52, 38, 60]
    runs = make_one_condition(tmp_path, 5, spec, age=ages)
    maps = collect_subject_maps(tmp_path, runs, "stim")
    assert maps.sort_values("subject")["age"].tolist() == ages
    group = run_group_glm(tmp_path, runs, spec)
    assert [m.contrast for m in group.maps] == ["stim"]


def _sidecar(path: Path) -> dict:
    return json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text(),
                      parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c} in {path}"))


def _group_spec(**group) -> AnalysisSpec:
    return spec_from_dict({"group": group, "inference": {"enabled": False},
                           "pathways": {"enabled": False}})


# ----------------------------------------------------------------------------- item 6
@pytest.fixture
def no_figures(monkeypatch):
    """Reports without glass-brain plots (seconds each; not what these tests check)."""
    import fmri_pain.report.group

    monkeypatch.setattr(fmri_pain.report.group, "glass_brain_uri", lambda *a, **k: "data:,")
    monkeypatch.setattr(fmri_pain.report.group, "design_matrix_uri", lambda *a, **k: "data:,")
    monkeypatch.setattr(fmri_pain.report.group, "viewer_document",
                        lambda *a, **k: ("<p>viewer</p>", 600, 300))


def test_two_subjects_on_one_sequence_period_dropped_and_reported(tmp_path, no_figures):
    spec = _group_spec()
    seq = williams_sequences()[0]
    runs = make_trial(tmp_path, 2, spec, sequences=[seq, seq])
    group = run_group_glm(tmp_path, runs, spec)
    repeated = [m for m in group.maps if m.route == "repeated"]
    assert repeated, "the repeated-measures model should still be fitted"
    design = repeated[0].design
    assert not any(c.startswith("period") for c in design.design.columns)
    assert design.terms == "condition + subject"
    assert any("period2, period3 dropped" in w for w in repeated[0].warnings)
    assert any("period2, period3 dropped" in w for w in group.warnings)
    side = _sidecar(repeated[0].paths["t"])
    assert side["ModelTerms"] == "condition + subject"
    assert any("period2, period3 dropped" in w for w in side["Warnings"])
    # 6 maps, rank 4 (3 conditions + 1 subject column): df 2
    assert side["DegreesOfFreedom"] == 2 == len(design.design) - np.linalg.matrix_rank(design.design)
    text = group_section(group, spec).text
    assert "terms condition + subject (df 2)" in text and "subject + period" not in text
    html = write_group_report(group, spec, tmp_path).read_text()
    assert "period2, period3 dropped" in html
    # paired routes cannot run on two subjects: said, not silent
    assert any(w.startswith("paired dualMinusScs: only 2") for w in group.warnings)


def test_two_sequences_keep_the_period_terms(tmp_path):
    spec = _group_spec()
    runs = make_trial(tmp_path, 3, spec, sequences=williams_sequences()[:3])
    group = run_group_glm(tmp_path, runs, spec)
    repeated = next(m for m in group.maps if m.route == "repeated")
    assert repeated.design.terms == "condition + subject + period"
    assert not any("dropped" in w for w in group.warnings)


def test_covariate_with_missing_values_is_left_out_and_reported(tmp_path):
    spec = _group_spec(covariates=["pain_relief"])
    runs = make_trial(tmp_path, 5, spec,
                      covariate=lambda s, c: float("nan") if (s, c) == ("03", "DUAL") else 10.0 * int(s) + len(c))
    group = run_group_glm(tmp_path, runs, spec)
    by_name = {(m.route, m.contrast): m for m in group.maps}
    dual, scs = by_name["one-sample", "dual"], by_name["one-sample", "scs"]
    assert dual.design.covariates == [] and scs.design.covariates == ["pain_relief"]
    assert ("one-sample", "scsByPainRelief") in by_name and ("one-sample", "dualByPainRelief") not in by_name
    assert any("covariate pain_relief left out: missing or not numeric for sub-03" in w
               for w in dual.warnings)
    assert _sidecar(dual.paths["t"])["Covariates"] == []
    assert _sidecar(scs.paths["t"])["Covariates"] == ["pain_relief"]
    assert any("sub-03" in w for w in _sidecar(dual.paths["t"])["Warnings"])
    # the repeated model and the paired models lose it too, each with its own warning
    repeated = next(m for m in group.maps if m.route == "repeated")
    assert "pain_relief" not in repeated.design.design.columns
    assert sum("covariate pain_relief left out" in w for w in group.warnings) >= 3
    assert "report" in group_section(group, spec).text  # methods point at the listed decisions


def test_contrast_removed_from_the_spec_is_not_analysed(tmp_path):
    old = spec_from_dict({"first_level": {"contrasts": {"onMinusRating": "on - rating"}},
                          "inference": {"enabled": False}, "pathways": {"enabled": False}})
    runs = make_trial(tmp_path, 4, old, extra_contrasts=["onMinusRating"])
    group = run_group_glm(tmp_path, runs, old)
    assert "onMinusRating" in {m.contrast for m in group.maps}

    current = _group_spec()
    group = run_group_glm(tmp_path, runs, current)
    assert "onMinusRating" not in {m.contrast for m in group.maps}
    assert any("onMinusRating" in w and "not defined by the current spec" in w for w in group.warnings)
    # the maps were made with a contrast the current spec lacks: said as well
    assert any("first_level.contrasts.onMinusRating" in w for w in group.warnings)


def test_subjects_fitted_with_different_first_level_parameters_are_refused(tmp_path):
    spec = _group_spec()
    four = spec_from_dict({"first_level": {"smoothing_fwhm": 4.0}})
    runs = make_trial(tmp_path, 4, spec,
                      params_of=lambda s: _recorded(four if s == "03" else spec))
    with pytest.raises(InputError) as err:
        run_group_glm(tmp_path, runs, spec)
    message = str(err.value)
    assert "\n" not in message
    assert "first_level.smoothing_fwhm" in message
    assert "sub-01, sub-02, sub-04" in message and "sub-03" in message
    recorded = {k: v for k, v in _recorded(four).items() if k in ("first_level", "events")}
    assert first_level_fingerprint(recorded) in message


def test_maps_made_with_another_spec_are_described_by_their_own_parameters(tmp_path):
    made_with = spec_from_dict({"first_level": {"smoothing_fwhm": 4.0}})
    runs = make_trial(tmp_path, 4, made_with)
    spec = _group_spec()
    group = run_group_glm(tmp_path, runs, spec)
    assert group.first_level["first_level"]["smoothing_fwhm"] == 4.0
    assert any("first_level.smoothing_fwhm" in w for w in group.warnings)
    text = first_level_section(group.first_level, spec).text
    assert "4 mm FWHM" in text and "6 mm" not in text


# ----------------------------------------------------------------------------- item 9
def test_group_sidecars_describe_their_maps(tmp_path):
    spec = _group_spec()
    runs = make_trial(tmp_path, 6, spec)
    group = run_group_glm(tmp_path, runs, spec)
    by_name = {(m.route, m.contrast): m for m in group.maps}
    scs = by_name["one-sample", "scs"]
    side = _sidecar(scs.paths["t"])
    assert side["StatisticType"] == "t" and side["ModelRoute"] == "one-sample"
    assert side["DegreesOfFreedom"] == 5 and side["NumberOfSubjects"] == 6
    assert side["ContrastWeights"] == [1.0] and side["DesignColumns"] == ["intercept"]
    assert side["Sources"] == [f"bids::sub-{s:02d}/func/sub-{s:02d}_task-stim_space-{SPACE}"
                               f"_contrast-scs_stat-effect_statmap.nii.gz" for s in range(1, 7)]
    assert set(side["SourceChecksums"]) == set(side["Sources"])
    # the recorded df is the one the z map was converted with (independent: scipy)
    t = np.asanyarray(nib.load(scs.paths["t"]).dataobj)
    z = np.asanyarray(nib.load(scs.paths["z"]).dataobj)
    assert _sidecar(scs.paths["z"])["StatisticType"] == "z"
    np.testing.assert_allclose(z[2, 2, 2], stats.norm.isf(stats.t.sf(t[2, 2, 2], side["DegreesOfFreedom"])),
                               rtol=1e-4)
    # independent one-sample t over the six maps
    data = np.stack([np.asanyarray(nib.load(p).dataobj)[2, 2, 2] for p in scs.images])
    assert t[2, 2, 2] == pytest.approx(stats.ttest_1samp(data, 0).statistic, rel=1e-4)

    f_map = by_name["repeated", "conditionF"]
    f_side = _sidecar(f_map.paths["F"])
    n_maps = 18
    rank = np.linalg.matrix_rank(f_map.design.design)
    assert f_side["StatisticType"] == "F" and f_side["DegreesOfFreedom"] == [2, n_maps - rank]
    assert np.asarray(f_side["ContrastWeights"]).shape == (2, len(f_side["DesignColumns"]))
    diff = by_name["repeated", "dualMinusScs"]
    d_side = _sidecar(diff.paths["t"])
    weights = dict(zip(d_side["DesignColumns"], d_side["ContrastWeights"]))
    assert weights["DUAL"] == 1 and weights["SCS"] == -1 and d_side["NumberOfMaps"] == n_maps
    paired = by_name["paired", "dualMinusScs"]
    assert _sidecar(paired.paths["t"])["DegreesOfFreedom"] == 6 - 2  # intercept + period difference

    for path in sorted((tmp_path / "group").rglob("*.json")):
        record = json.loads(path.read_text())
        bad = [k for k in record if not CAMEL.match(k)]
        bad += [f"Threshold.{k}" for k in record.get("Threshold", {}) if not CAMEL.match(k)]
        assert not bad, (path.name, bad)
        assert not any(str(s).startswith("/") or "/tmp" in str(s) for s in record.get("Sources", []))
    empty = [json.loads(p.read_text()) for p in (tmp_path / "group").glob("*_desc-f*_stat-z_statmap.json")]
    assert all(set(e["Threshold"]) >= {"Method", "Alpha", "ZThreshold", "TwoSided"} for e in empty)


# ----------------------------------------------------------------------------- item 8
_TRIAL_WORDS = re.compile(r"crossover|mirror|(?<!fmri-)pain|period|SCS|DRGS|DUAL|condition x",
                          re.IGNORECASE)


def test_methods_of_a_one_condition_study_claim_no_crossover_mirroring_or_pain_side(tmp_path):
    spec = spec_from_dict({"events": {"on": "stim"}, "inference": {"enabled": False},
                           "pathways": {"enabled": False}})
    runs = make_one_condition(tmp_path, 5, spec)
    group = run_group_glm(tmp_path, runs, spec)
    from fmri_pain.report.group import methods_boilerplate

    sections = methods_boilerplate(tmp_path, runs, spec, group, [], None)
    text = " ".join(s.text for s in sections)
    assert not _TRIAL_WORDS.search(text), _TRIAL_WORDS.search(text)
    assert "'stim' events" in text and "one-sample t tests over 5 subjects (df 4)" in text
    assert [s.stage for s in sections] == ["preprocessing", "first level", "group level", "software"]
    assert "nilearn's run_glm" in text and "vectorised reimplementation" in text


def test_methods_of_the_trial_name_every_stage_that_ran_and_cite_them(tmp_path, no_figures):
    from fmri_pain.pipeline.group import run_group_level

    spec = spec_from_dict({"inference": {"n_perm": 20, "tfce": False},
                           "pathways": {"enabled": False}})
    runs = make_trial(tmp_path, 6, spec, pain_side=lambda s: "left" if int(s) % 2 else "right")
    result = run_group_level(tmp_path, runs, spec)
    md = (tmp_path / "CITATION.md").read_text()
    for stage in ("**Preprocessing.**", "**First level.**", "**Group level.**",
                  "**Permutation inference.**", "**Software.**"):
        assert stage in md
    assert "Pathways" not in md  # it did not run
    assert "crossover" in md and "condition + subject + period" in md
    assert "The maps of 3 patient(s) whose pain was on the left were mirrored" in md
    # 20 random rearrangements asked for: 21 with the observed data
    assert "21 rearrangements per contrast, the observed data included" in md
    # difference maps are mirrored like the condition maps (pain_side is a subject-level column)
    paired = next(m for m in result.group.maps if m.route == "paired")
    assert json.loads(paired.paths["t"].with_name(paired.paths["t"].name.replace(".nii.gz", ".json"))
                      .read_text())["MirroredSubjects"] == ["sub-01", "sub-03", "sub-05"]
    html = result.report.read_text()
    assert "Permutation inference." in html and "(Abraham et al., 2014)" in html

    bibtexparser = pytest.importorskip("bibtexparser")
    library = bibtexparser.parse_string((tmp_path / "CITATION.bib").read_text())
    assert not library.failed_blocks
    keys = [e.key for e in library.entries]
    cited = list(dict.fromkeys(re.findall(r"@([A-Za-z0-9_]+)\]?[;\]]", md)))
    assert set(cited) == set(keys) and {"nilearn", "nichols2002", "senn2002"} <= set(keys)
    assert all(e.fields_dict["title"].value for e in library.entries)


def test_shipped_bibliography_parses_and_unknown_keys_are_errors():
    bibtexparser = pytest.importorskip("bibtexparser")
    from importlib import resources

    text = resources.files("fmri_pain.report").joinpath("boilerplate.bib").read_text()
    library = bibtexparser.parse_string(text)
    assert not library.failed_blocks
    assert sorted(e.key for e in library.entries) == sorted(bibliography())
    section = MethodsSection("x", "a [@nilearn; @nipype] b [@fmriprep]")
    assert cited_keys([section]) == ["nilearn", "nipype", "fmriprep"]
    parsed = bibtexparser.parse_string(citation_bibtex([section]))
    assert [e.key for e in parsed.entries] == ["nilearn", "nipype", "fmriprep"]
    with pytest.raises(KeyError, match="nosuchpaper"):
        cited_keys([MethodsSection("x", "[@nosuchpaper]")])
