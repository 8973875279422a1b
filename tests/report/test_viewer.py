"""The map viewer: one iframe, a selector, the documents kept once and safe inside <script>."""

from __future__ import annotations

import json
import re

from fmri_pain.report.viewer import viewer_section


def test_viewer_section_selector_and_documents():
    docs = [("a <b>", "<html><script>var x = '</script><!--';</script></html>"), ("c", "<p>c</p>")]
    html = viewer_section(docs, width=600, height=300)
    assert html.count("<iframe") == 1 and "width:630px;height:370px" in html
    assert "<option value='0'>a &lt;b&gt;</option>" in html and "<option value='1'>c</option>" in html
    payload = re.search(r"id='viewer-docs'>(.*?)</script>", html, re.S).group(1)
    assert "<" not in payload  # the documents' own scripts cannot end the element
    assert json.loads(payload) == [d for _, d in docs]
    assert "http" not in html
    assert viewer_section([]) == ""
