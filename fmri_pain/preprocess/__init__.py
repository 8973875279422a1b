"""Preprocessing from raw BIDS: realignment, slice timing, registration to MNI, confounds, QC.

Public entry points: :func:`preprocess_subject`, :class:`PreprocessSpec`, the
``init_*_wf`` workflow factories and :func:`preproc_report_section`.
"""
from __future__ import annotations

from .qc import preproc_report_section
from .run import default_work_dir, load_qc, output_paths, preprocess_subject
from .spec import PreprocessSpec
from .workflows import init_anat_preproc_wf, init_func_preproc_wf, init_preproc_wf

__all__ = [
    "PreprocessSpec",
    "default_work_dir",
    "init_anat_preproc_wf",
    "init_func_preproc_wf",
    "init_preproc_wf",
    "load_qc",
    "output_paths",
    "preproc_report_section",
    "preprocess_subject",
]
