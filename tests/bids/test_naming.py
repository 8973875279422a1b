"""The naming contract (fmri_pain.bids.naming): what the writer builds, the reader parses back."""

from __future__ import annotations

from fmri_pain.bids.derivatives import statmap_path
from fmri_pain.bids.naming import (CONTRAST_ORDER, STIM_CONTRAST, THRESHOLD_DESCS, bids_filename,
                                   order_contrasts, parse_bids_name)
from fmri_pain.trial import trial_contrasts


def test_a_written_statmap_name_parses_back_to_its_entities(tmp_path):
    path = statmap_path(tmp_path, contrast="dualMinusScs", stat="z", subject="01", session="dual",
                        task="stim", desc="fdr")
    assert parse_bids_name(path.name) == {
        "sub": "01", "ses": "dual", "task": "stim", "space": "MNI152NLin2009aSym",
        "contrast": "dualMinusScs", "desc": "fdr", "stat": "z", "suffix": "statmap",
        "extension": ".nii.gz"}
    name = bids_filename({"sub": "02", "task": "stim", "run": 1}, "design", ".tsv")
    assert parse_bids_name(name) == {"sub": "02", "task": "stim", "run": "1", "suffix": "design",
                                     "extension": ".tsv"}


def test_contrasts_are_listed_in_the_trials_order_then_alphabetically():
    assert CONTRAST_ORDER == (STIM_CONTRAST, *trial_contrasts())
    assert order_contrasts(["zeta", "dual", "alpha", "stim", "conditionF", "scs", "dual"]) == [
        "stim", "scs", "dual", "conditionF", "alpha", "zeta"]


def test_the_group_thresholds_descs_name_nilearn_height_controls():
    assert THRESHOLD_DESCS == {"fdr": "fdr", "fwe": "bonferroni"}
