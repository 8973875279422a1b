"""Preprocessing from raw BIDS: realignment, slice timing, registration to MNI, confounds, QC.

Public entry points: :func:`preprocess_subject`, :class:`PreprocessSpec`, the
``init_*_wf`` workflow factories and :func:`preproc_report_section`. They are
imported lazily so that reading the analysis spec does not load Nipype.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "PreprocessSpec": "fmri_pain.config.preprocess",
    "default_work_dir": "fmri_pain.preprocess.run",
    "load_qc": "fmri_pain.preprocess.run",
    "output_paths": "fmri_pain.preprocess.run",
    "preprocess_subject": "fmri_pain.preprocess.run",
    "preproc_report_section": "fmri_pain.preprocess.qc",
    "init_anat_preproc_wf": "fmri_pain.preprocess.workflows",
    "init_func_preproc_wf": "fmri_pain.preprocess.workflows",
    "init_preproc_wf": "fmri_pain.preprocess.workflows",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
