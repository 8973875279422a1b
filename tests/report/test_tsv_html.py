"""The HTML of written tables: rows selected, columns kept, the sidecar's description shown."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pandas as pd
from PIL import Image

from fmri_pain.report.tsv_html import (FIGURE_WIDTH, collapsed, described_table, description, img_tag,
                                       significant_rows, tsv_table)


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
    pixels = np.zeros((20, 2000, 3), dtype=np.uint8)
    pixels[:, 1000:] = (200, 30, 30)
    Image.fromarray(pixels).save(png)
    tag = img_tag(png, "x & y")
    assert "x &amp; y" in tag and 'src="data:image/png;base64,' in tag
    embedded = Image.open(io.BytesIO(base64.b64decode(tag.split("base64,")[1].split('"')[0])))
    assert embedded.size == (FIGURE_WIDTH, 9)  # scaled down to the report's width
    colours = np.asarray(embedded.convert("RGB"))
    assert tuple(colours[4, 10]) == (0, 0, 0) and tuple(colours[4, -10]) == (200, 30, 30)


def test_long_tables_collapse_to_their_significant_rows():
    df = pd.DataFrame({"node": [f"n{i}" for i in range(30)], "p": np.linspace(0.001, 0.9, 30),
                       "p_fdr": [0.01, 0.2, 0.03] + [0.5] * 27})
    shown, caption = significant_rows(df)
    assert list(shown["node"]) == ["n0", "n2"]  # p_fdr < 0.05, smallest first
    assert caption == "2 of 30 rows with p_fdr &lt; 0.05"
    html = collapsed(df, lambda d: d.to_html(index=False))
    opened, full = html.split("<details", 1)
    assert ">n0<" in opened and ">n2<" in opened and ">n1<" not in opened
    assert "Full table (30 rows)" in full and full.count("<td>n") == 30  # every row
    none = df.assign(p_fdr=0.9).sample(frac=1.0, random_state=0)
    shown, caption = significant_rows(none)
    assert list(shown["node"]) == [f"n{i}" for i in range(10)]  # the 10 smallest p
    assert caption.startswith("no row with p_fdr &lt; 0.05; the 10 of 30 rows with the smallest p")
    many = df.assign(p_fdr=0.001)
    assert len(significant_rows(many)[0]) == 25  # never a long table open
    short = df.head(8)
    assert collapsed(short, lambda d: d.to_html(index=False)).count("<details") == 0
