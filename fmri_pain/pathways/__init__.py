"""Pain-pathway analysis: atlas, ROI effects, mixed models, connectivity, behaviour, decoding.

Exports are lazy so that ``fmri_pain.config.pathways`` (imported by the analysis
spec) does not pull in statsmodels, scikit-learn or matplotlib.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "PathwayAtlas": "atlas", "atlas_from_masks": "atlas", "build_atlas": "atlas", "write_atlas": "atlas",
    "run_pathway_analysis": "run",
    "PathwaysSpec": "spec", "atlas_path": "spec",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"fmri_pain.pathways.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'fmri_pain.pathways' has no attribute {name!r}")
