"""The carry-over section of group.html and its methods sentence say what ran and what was found."""

from __future__ import annotations

import pandas as pd

from fmri_pain.config.spec import spec_from_dict
from fmri_pain.report.carryover import carryover_methods, carryover_report_section
from fmri_pain.report.group import write_group_report
from fmri_pain.report.methods import group_section
from tests.glm.second_level.test_group_honesty import make_trial
from tests.support.group import run_group_glm


def test_carryover_section_and_methods(tmp_path):
    spec = spec_from_dict({"group": {"carryover": True}})
    result = run_group_glm(tmp_path, make_trial(tmp_path, 12, spec), spec)
    # a pathway carry-over table as the pathway stage writes it (two nodes, one not estimable)
    node_table = pd.DataFrame({
        "level": ["node", "node"], "node": ["a", "b"], "pathway": ["lateral", "medial"],
        "contrast": ["dualMinusScs", "dualMinusScs"], "estimate": [1.0, 0.5], "se": [0.2, 0.2],
        "estimate_without_carryover": [1.3, 0.5], "se_without_carryover": [0.2, 0.2],
        "shift": [-0.3, float("nan")], "carryover_F": [9.0, float("nan")],
        "carryover_df_num": [2, float("nan")], "carryover_df": [20.0, float("nan")],
        "carryover_p": [0.001, float("nan")], "carryover_p_fdr": [0.002, float("nan")],
        "carryover_detected": [True, float("nan")], "note": ["", "carry-over not modelled: x"]})
    path = tmp_path / "carryover.tsv"
    node_table.to_csv(path, sep="\t", index=False)
    html = carryover_report_section(result, None, {"carryover": path}, 0.05)
    assert "carryoverF" in html and "sequenceF" in html and "shift dualMinusScs" in html
    assert "carry-over not modelled: x" in html
    for contrast in result.carryover_shift["contrast"]:
        assert contrast in html
    text = group_section(result, spec).text
    assert "carryoverF" in text and "carryoverDual" in text and "sequenceF" in text
    assert "carry-over" in text  # the terms as fitted
    assert carryover_methods(result) in text
    result.maps = [m for m in result.maps if m.contrast in ("carryoverF", "sequenceF")]  # fewer figures
    report = write_group_report(result, spec, tmp_path).read_text()
    assert 'id="carryover"' in report and "Carry-over and sequence effects" in report
    # without the key there is no section and no sentence
    plain = spec_from_dict({})
    result = run_group_glm(tmp_path / "plain", make_trial(tmp_path / "plain", 6, plain), plain)
    assert carryover_report_section(result, None, None, 0.05) is None
    assert carryover_methods(result) is None
