"""The Responders part of group.html: what the pathway stage wrote, nothing when it did not run."""

import pandas as pd

from fmri_pain.bids.derivatives import write_tsv
from fmri_pain.report.responders import responder_report_section


def test_section_lists_counts_and_tables(tmp_path):
    status = pd.DataFrame({"subject": ["01", "02", "03"], "condition": "SCS",
                           "responder": pd.array([True, False, None], dtype="boolean")})
    outputs = {"responders": write_tsv(status, tmp_path / "responders.tsv",
                                       sidecar={"Description": "responder when pain_relief >= 50"})}
    outputs["responder_maps"] = write_tsv(pd.DataFrame({"condition": ["SCS"], "status": ["skipped"],
                                                        "reason": ["1 responder(s)"]}),
                                          tmp_path / "responder_maps.tsv")
    html = responder_report_section(outputs)
    assert "responder when pain_relief &gt;= 50" in html
    assert "<th>n/a</th>" in html and "1 responder(s)" in html
    assert responder_report_section({}) == ""


def test_methods_text_names_what_ran_and_cites_known_keys(tmp_path):
    from fmri_pain.report.methods import boilerplate, pathways_section

    status = pd.DataFrame({"subject": ["01"], "condition": "SCS", "responder": [True]})
    outputs = {"responders": write_tsv(status, tmp_path / "responders.tsv",
                                       sidecar={"Description": "responder when pain_relief >= 50"}),
               "responder_prediction": write_tsv(status, tmp_path / "responder_prediction.tsv",
                                                 sidecar={"Description": "leave-one-subject-out ridge"})}
    section = pathways_section(outputs)
    assert "Responders: responder when pain_relief >= 50." in section.text
    assert "Prediction of response: leave-one-subject-out ridge [@sklearn]." in section.text
    assert "responders vs non-responders" not in section.text.lower()  # no node tests were written
    boilerplate([section])  # every citation key is in the bibliography
