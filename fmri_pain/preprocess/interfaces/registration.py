"""Interfaces of the spatial steps: T1w normalization, EPI coregistration, one-shot resampling to MNI."""
from __future__ import annotations

import os

import nibabel as nib
import numpy as np
from nipype.interfaces.base import BaseInterfaceInputSpec, File, TraitedSpec, traits

from fmri_pain.preprocess.interfaces.base import (
    StepInterface,
    mni_image,
    native_image,
    read_xfm,
    saved_file,
    xfm_record,
)


def _array(path: str) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj, dtype=np.float32)


class _AnatNormInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="T1w (raw)")
    kind = traits.Enum("affine", "rigid", "syn", usedefault=True)
    resolution = traits.Float(3.0, usedefault=True, desc="template resolution for registration (mm)")


class _AnatNormOutputSpec(TraitedSpec):
    out_brain = saved_file("t1w_brain.nii.gz", "skull-stripped T1w (native)")
    out_mask = saved_file("t1w_mask.nii.gz", "T1w brain mask (native)")
    out_xfm = saved_file("std_to_t1w.json", "JSON: MNI -> T1w pull transform")
    out_std = saved_file("t1w_space-MNI.nii.gz", "T1w brain resampled to MNI (1 interpolation)")


class AnatNormalize(StepInterface):
    """Brain extraction and normalization of the T1w to MNI152 (:func:`.normalize.normalize_t1w`)."""

    input_spec = _AnatNormInputSpec
    output_spec = _AnatNormOutputSpec

    def _step(self, in_file, kind, resolution):
        from fmri_pain.preprocess.normalize import normalize_t1w

        img = nib.load(in_file)
        if img.ndim != 3:
            raise ValueError(f"{in_file}: T1w must be 3D, got shape {img.shape}")
        res = normalize_t1w(np.asarray(img.dataobj, dtype=np.float32), img.affine, kind, resolution,
                            keep_dir=os.path.abspath("xfm") if kind != "affine" else None)
        return {"out_brain": native_image(res.brain, img.affine),
                "out_mask": native_image(res.mask, img.affine, dtype=np.uint8),
                "out_xfm": xfm_record(res.reg.kind, res.reg.matrix, res.reg.transforms, route="T1w"),
                "out_std": native_image(res.std, res.std_affine)}


class _CoregInputSpec(BaseInterfaceInputSpec):
    boldref = File(exists=True, mandatory=True)
    t1w_brain = File(exists=True, desc="skull-stripped T1w; absent: EPI-template route")
    t1w_mask = File(exists=True)
    kind = traits.Enum("rigid", "affine", usedefault=True)
    std_kind = traits.Enum("affine", "rigid", "syn", usedefault=True, desc="EPI-template route model")
    resolution = traits.Float(3.0, usedefault=True)


class _CoregOutputSpec(TraitedSpec):
    out_xfm = saved_file("coreg_xfm.json", "JSON: T1w -> EPI reference (or MNI -> EPI reference) pull transform")
    route = traits.Str(desc="'T1w' or 'EPI-template'")


class Coregister(StepInterface):
    """EPI reference -> T1w (rigid, mutual information); without a T1w, EPI reference -> MNI directly.

    :func:`.normalize.coregister_to_t1w` or :func:`.normalize.register_to_template`; the transform
    record's ``route`` says which.
    """

    input_spec = _CoregInputSpec
    output_spec = _CoregOutputSpec

    def _step(self, boldref, kind, std_kind, resolution, t1w_brain=None, t1w_mask=None):
        from fmri_pain.preprocess.normalize import coregister_to_t1w, register_to_template

        ref = nib.load(boldref)
        ref_data = np.asarray(ref.dataobj, dtype=np.float32)
        if t1w_brain:
            t1 = nib.load(t1w_brain)
            reg = coregister_to_t1w(ref_data, ref.affine, np.asarray(t1.dataobj, dtype=np.float32), t1.affine,
                                    _array(t1w_mask) if t1w_mask else None, kind=kind, resolution=resolution)
            return {"out_xfm": xfm_record(reg.kind, reg.matrix, route="T1w"), "route": "T1w"}
        reg = register_to_template(ref_data, ref.affine, kind=std_kind, resolution=resolution,
                                   keep_dir=os.path.abspath("xfm") if std_kind == "syn" else None)
        return {"out_xfm": xfm_record(reg.kind, reg.matrix, reg.transforms, route="EPI-template"),
                "route": "EPI-template"}


class _ResampleInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="slice-time corrected (or raw) BOLD")
    motion = File(exists=True, mandatory=True)
    boldref = File(exists=True, mandatory=True)
    boldref_mask = File(exists=True, mandatory=True)
    coreg_xfm = File(exists=True, mandatory=True)
    std_xfm = File(exists=True, desc="MNI -> T1w transform (absent on the EPI-template route)")
    order = traits.Int(3, usedefault=True)


class _ResampleOutputSpec(TraitedSpec):
    # the series uncompressed: gzip of a 4D series costs seconds
    out_file = saved_file("bold_std.nii", "BOLD in MNI space at the BOLD resolution")
    out_mask = saved_file("mask_std.nii.gz", "brain mask in MNI space")
    out_boldref = saved_file("boldref_std.nii.gz", "EPI reference in MNI space")


class ResampleToStd(StepInterface):
    """Compose motion, coregistration and normalization; interpolate each volume once (:func:`.to_mni.run_to_mni`)."""

    input_spec = _ResampleInputSpec
    output_spec = _ResampleOutputSpec

    def _step(self, in_file, motion, boldref, boldref_mask, coreg_xfm, order, std_xfm=None):
        from fmri_pain.preprocess.to_mni import run_to_mni

        img = nib.load(in_file)
        zooms = img.header.get_zooms()
        coreg, record = read_xfm(coreg_xfm)
        std = None
        if record.get("route") != "EPI-template":
            if std_xfm is None:
                raise ValueError("T1w route needs the MNI -> T1w transform")
            std = read_xfm(std_xfm)[0]
        ref, native_mask = nib.load(boldref), nib.load(boldref_mask)
        res = run_to_mni(np.asarray(img.dataobj, dtype=np.float32), img.affine, tuple(float(z) for z in zooms[:3]),
                         np.load(motion)["matrices"], coreg, std, np.asarray(ref.dataobj, dtype=np.float32),
                         ref.affine, np.asarray(native_mask.dataobj, dtype=np.float32), native_mask.affine,
                         order=order)
        tr = float(zooms[3]) if len(zooms) > 3 else None
        return {"out_file": mni_image(res.bold, res.affine, tr=tr, units=True),
                "out_boldref": mni_image(res.boldref, res.affine),
                "out_mask": mni_image(res.mask, res.affine, dtype=np.uint8)}
