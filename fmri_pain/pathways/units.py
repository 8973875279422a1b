"""The units the ROI statistics are computed on: nodes, pathway means, the lateral-medial index."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd

from fmri_pain.pathways.stats import lateral_medial_index, pathway_means


def analysis_units(effects: pd.DataFrame, value: str = "effect") -> Iterator[tuple[dict, pd.DataFrame]]:
    """``(ids, data)`` per node, pathway (mean over nodes) and the lateral-medial index.

    The same units, in the same order, as :func:`fmri_pain.pathways.stats.roi_statistics`;
    ``ids`` holds ``level``, ``node`` and ``pathway``; ``data`` has the value in ``effect``.
    """
    for node, data in effects.groupby("node", sort=False):
        if data[value].notna().sum() == 0:
            continue
        yield ({"level": "node", "node": node, "pathway": data["pathway"].iloc[0]},
               data.assign(effect=data[value]))
    for pathway, data in pathway_means(effects).groupby("pathway", sort=False):
        yield {"level": "pathway", "node": pathway, "pathway": pathway}, data
    index = lateral_medial_index(effects)
    if not index.empty and index["effect"].notna().any():
        yield ({"level": "index", "node": "lateral_minus_medial", "pathway": "lateral-medial"},
               index)
