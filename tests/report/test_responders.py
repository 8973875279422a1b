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
