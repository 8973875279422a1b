"""Preprocessing from raw BIDS: realignment, slice timing, registration to MNI, confounds, QC.

Public entry points: :func:`preprocess_subject`, the ``init_*_wf`` workflow factories
and :func:`preproc_report_section` (the options are
:class:`fmri_pain.config.preprocess.PreprocessSpec`). They are
imported lazily so that reading the analysis spec does not load Nipype.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "default_work_dir": "run",
    "load_qc": "run",
    "output_paths": "run",
    "preprocess_subject": "run",
    "preproc_report_section": "qc",
    "init_anat_preproc_wf": "workflows",
    "init_func_preproc_wf": "workflows",
    "init_preproc_wf": "workflows",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
