"""The HTML of written tables: rows selected, columns kept, the sidecar's description shown."""

from __future__ import annotations

import json

import pandas as pd

from fmri_pain.report.tsv_html import described_table, description, img_tag, tsv_table


def test_tsv_table_description_and_figure(tmp_path):
    path = tmp_path / "stats.tsv"
    pd.DataFrame({"node": ["a", "b", "c"], "p": [0.5, 0.01, 0.2], "extra": [1, 2, 3]}).to_csv(
        path, sep="\t", index=False)
    html = tsv_table(path, lambda d: d.sort_values("p"), ["node", "p", "missing"], max_rows=2)
    assert html.index(">b<") < html.index(">c<") and ">a<" not in html and "extra" not in html
    assert description(path) == ""  # no sidecar
    path.with_suffix(".json").write_text(json.dumps({"Description": "a <model> that ran"}))
    heading, text, table = described_table(path, "Nodes", None, ["node"], level=4)
    assert heading == "<h4>Nodes</h4>" and text == "<p>a &lt;model&gt; that ran.</p>"
    assert table.count("<td>") == 3  # every row of the one column kept
    png = tmp_path / "f.png"
    png.write_bytes(b"\x89PNG fake")
    assert 'src="data:image/png;base64,iVBORyBmYWtl"' in img_tag(png, "x & y")
    assert "x &amp; y" in img_tag(png, "x & y")
