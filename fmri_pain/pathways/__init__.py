"""Pain-pathway analysis: atlas, ROI effects, mixed models, connectivity, behaviour, decoding.

Exports are lazy so that importing one module does not pull in statsmodels,
scikit-learn or matplotlib. The section's options are :class:`fmri_pain.config.pathways.PathwaysSpec`.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "PathwayAtlas": "atlas", "atlas_from_masks": "atlas", "build_atlas": "atlas", "write_atlas": "atlas",
    "run_pathway_analysis": "run",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"fmri_pain.pathways.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'fmri_pain.pathways' has no attribute {name!r}")
