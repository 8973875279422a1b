"""Interfaces of the per-run summaries: the fMRIPrep-style confounds table and the QC maps and figures."""
from __future__ import annotations

import nibabel as nib
import numpy as np
from nipype.interfaces.base import BaseInterfaceInputSpec, File, TraitedSpec, traits

from fmri_pain.preprocess.interfaces.base import StepInterface, native_image, saved_file


class _ConfoundsInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True)
    mask = File(exists=True, mandatory=True)
    motion = File(exists=True, mandatory=True)
    tr = traits.Float(mandatory=True)
    n_dummy = traits.Int(0, usedefault=True)
    n_acompcor = traits.Float(0.5, usedefault=True)
    n_tcompcor = traits.Float(0.5, usedefault=True)
    high_pass = traits.Float(128.0, usedefault=True)
    fd_threshold = traits.Float(0.5, usedefault=True)
    dvars_threshold = traits.Float(1.5, usedefault=True)


class _ConfoundsOutputSpec(TraitedSpec):
    out_file = saved_file("confounds.tsv", "confounds TSV (fMRIPrep columns)")
    out_json = saved_file("confounds.json", "confounds JSON sidecar")


class Confounds(StepInterface):
    """fMRIPrep-style confounds table (:func:`.confounds.compute_confounds`)."""

    input_spec = _ConfoundsInputSpec
    output_spec = _ConfoundsOutputSpec

    def _step(self, in_file, mask, motion, tr, **options):
        from fmri_pain.preprocess.confounds import compute_confounds
        from fmri_pain.preprocess.templates import tissue_masks

        img = nib.load(in_file)
        data = np.asarray(img.dataobj, dtype=np.float32)
        tissues = tissue_masks(data.shape[:3], img.affine)
        motion = np.load(motion)
        table, meta = compute_confounds(data, np.asarray(nib.load(mask).dataobj) > 0, tissues["wm"], tissues["csf"],
                                        motion["params"], tr, rmsd=motion["rmsd"], **options)
        return {"out_file": table, "out_json": meta}


class _QCInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True)
    mask = File(exists=True, mandatory=True)
    boldref = File(exists=True, mandatory=True)
    confounds = File(exists=True, mandatory=True)
    tr = traits.Float(mandatory=True)
    n_dummy = traits.Int(0, usedefault=True)
    title = traits.Str("", usedefault=True)


class _QCOutputSpec(TraitedSpec):
    out_tsnr = saved_file("tsnr.nii.gz", "tSNR map (within the mask)")
    out_metrics = saved_file("qc.json", "JSON: QC metrics")
    out_carpet = saved_file("carpet.png", "carpet plot (PNG)")
    out_overlay = saved_file("overlay.png", "mean EPI in MNI over the template's edges (PNG)")


class QualityControl(StepInterface):
    """tSNR map, QC metrics and the carpet / registration figures of one run (:mod:`.qc`)."""

    input_spec = _QCInputSpec
    output_spec = _QCOutputSpec

    def _step(self, in_file, mask, boldref, confounds, tr, n_dummy, title):
        import matplotlib

        matplotlib.use("Agg")
        import pandas as pd

        from fmri_pain.preprocess.qc import carpet_figure, overlay_figure, qc_metrics, tsnr
        from fmri_pain.preprocess.templates import template_t1

        img, mask_img = nib.load(in_file), nib.load(mask)
        brain = np.asarray(mask_img.dataobj) > 0
        tsnr_map = tsnr(np.asarray(img.dataobj, dtype=np.float32), skip=n_dummy, mask=brain)
        conf = pd.read_csv(confounds, sep="\t", na_values="n/a")
        tpl, tpl_aff = template_t1(2.0)
        return {"out_tsnr": native_image(tsnr_map, img.affine), "out_metrics": qc_metrics(tsnr_map, brain, conf),
                "out_carpet": carpet_figure(img, mask_img, conf, tr, title=title),
                "out_overlay": overlay_figure(nib.load(boldref), nib.Nifti1Image(tpl, tpl_aff),
                                              title=f"{title}: mean EPI in MNI, template edges")}
