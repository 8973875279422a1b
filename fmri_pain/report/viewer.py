"""The group report's interactive map viewer: one nilearn slice viewer, a selector over the maps.

Each map is a self-contained nilearn document (:func:`~fmri_pain.report.figures.viewer_document`);
the page keeps them once, as JSON, and shows the selected one in an iframe, so no script
or image is fetched from anywhere.
"""

from __future__ import annotations

import html
import json


def _json_for_script(value) -> str:
    """JSON safe inside ``<script>``: every ``<`` escaped, so nothing can close the element early."""
    return json.dumps(value).replace("<", "\\u003c")


def viewer_section(documents: list[tuple[str, str]], width: int = 650, height: int = 320) -> str:
    """HTML of the viewer: a ``<select>`` of the maps and the iframe showing the chosen one.

    Parameters
    ----------
    documents : list of (label, html document)
        The maps' viewer documents, the first shown on load.
    width, height : int
        Size of the iframe in pixels (the largest viewer's).

    Returns
    -------
    str
        "" when there is no document.
    """
    if not documents:
        return ""
    options = "".join(f"<option value='{i}'>{html.escape(label)}</option>"
                      for i, (label, _) in enumerate(documents))
    docs = _json_for_script([doc for _, doc in documents])
    return (
        "<p class='small'>Click a slice to move the cursor; the values at the cursor are shown "
        "under the views. Same thresholds and colour maps as the figures below.</p>"
        f"<label>Map: <select id='viewer-select'>{options}</select></label>"
        f"<iframe class='viewer' id='viewer-frame' title='slice viewer' "
        f"style='width:{int(width) + 30}px;height:{int(height) + 70}px'></iframe>"
        f"<script type='application/json' id='viewer-docs'>{docs}</script>"
        "<script>(function () {"
        "var docs = JSON.parse(document.getElementById('viewer-docs').textContent);"
        "var frame = document.getElementById('viewer-frame');"
        "var select = document.getElementById('viewer-select');"
        "function show() { frame.srcdoc = docs[select.selectedIndex]; }"
        "select.addEventListener('change', show); show();"
        "})();</script>")
