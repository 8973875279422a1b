"""Interfaces of the native BOLD steps: non-steady-state volumes, head-motion estimation, slice timing."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
from nipype.interfaces.base import BaseInterfaceInputSpec, File, TraitedSpec, traits

from fmri_pain.preprocess.interfaces.base import StepInterface, native_image, read_series, saved_file


class _NonSteadyInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="raw 4D BOLD")
    dummy_scans = traits.Either(traits.Int, traits.Str("auto"), usedefault=True, desc="'auto' or a count")


class _NonSteadyOutputSpec(TraitedSpec):
    n_dummy = traits.Int(desc="initial non-steady-state volumes")
    detected = traits.Bool(desc="True when the count was detected rather than given")


class NonSteadyState(StepInterface):
    """Count initial non-steady-state volumes (given, or detected like fMRIPrep: :func:`.motion.detect_nonsteady`)."""

    input_spec = _NonSteadyInputSpec
    output_spec = _NonSteadyOutputSpec

    def _step(self, in_file, dummy_scans):
        from fmri_pain.preprocess.motion import detect_nonsteady

        detected = not isinstance(dummy_scans, int)
        img = nib.load(in_file)
        n = detect_nonsteady(read_series(in_file)[1]) if detected else dummy_scans
        if n >= img.shape[-1] - 2:
            raise ValueError(f"{in_file}: {n} non-steady-state volumes leave too few of {img.shape[-1]}")
        return {"n_dummy": int(n), "detected": detected}


class _RealignInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True)
    n_dummy = traits.Int(0, usedefault=True)
    n_iter = traits.Int(12, usedefault=True)


class _RealignOutputSpec(TraitedSpec):
    out_motion = saved_file("motion.npz", "npz: matrices (t,4,4), params (t,6), center (3,), rmsd (t,)")
    out_params = saved_file("motion_params.tsv", "TSV of the six motion parameters")
    out_boldref = saved_file("boldref.nii.gz", "mean realigned EPI (native)")
    out_mask = saved_file("boldref_mask.nii.gz", "EPI brain mask (native)")


class Realign(StepInterface):
    """Rigid head-motion estimation (:func:`.motion.realign`) and the EPI reference's brain mask."""

    input_spec = _RealignInputSpec
    output_spec = _RealignOutputSpec

    def _step(self, in_file, n_dummy, n_iter):
        from nilearn.masking import compute_epi_mask

        from fmri_pain.preprocess.confounds import MOTION_COLUMNS
        from fmri_pain.preprocess.motion import realign, rms_displacement

        img, data = read_series(in_file)
        res = realign(data, img.affine, ref_index=n_dummy, n_iter=n_iter,
                      exclude=n_dummy)
        boldref = native_image(res.reference, img.affine)
        mask = np.asarray(compute_epi_mask(boldref).dataobj, dtype=np.uint8)
        return {"out_motion": {"matrices": res.matrices, "params": res.params, "center": res.center,
                               "rmsd": rms_displacement(res.matrices, res.center)},
                "out_params": pd.DataFrame(res.params, columns=list(MOTION_COLUMNS)),
                "out_boldref": boldref, "out_mask": native_image(mask, img.affine, dtype=np.uint8)}


class _STCInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True)
    metadata = traits.Dict(mandatory=True, desc="BOLD JSON sidecar (RepetitionTime, SliceTiming ...)")
    enabled = traits.Bool(True, usedefault=True)


class _STCOutputSpec(TraitedSpec):
    out_file = saved_file("bold_stc.nii", "slice-time corrected BOLD (the input when not corrected)")
    ref_time = traits.Either(None, traits.Float, desc="StartTime of the corrected series (s)")
    note = traits.Str()


class SliceTiming(StepInterface):
    """Slice-timing correction from ``SliceTiming`` (:func:`.slice_timing.slice_time_correct`).

    Without it (disabled, no ``SliceTiming``, or every slice acquired together) the input passes
    through with a note saying why.
    """

    input_spec = _STCInputSpec
    output_spec = _STCOutputSpec

    def _step(self, in_file, metadata, enabled):
        from fmri_pain.preprocess.slice_timing import AXES, slice_time_correct

        st = metadata.get("SliceTiming")
        skip = ("slice-timing correction disabled in the spec" if not enabled
                else "slice-timing correction skipped: no SliceTiming in the sidecar" if not st
                else "slice-timing correction skipped: all slices acquired together"
                if len(set(np.round(st, 6))) == 1 else None)
        if skip:
            return {"out_file": in_file, "ref_time": None, "note": skip}
        img, data = read_series(in_file)
        direction = metadata.get("SliceEncodingDirection", "k")
        if direction not in AXES:
            raise ValueError(f"{in_file}: unknown SliceEncodingDirection {direction!r}")
        times = list(st)[::-1] if direction.endswith("-") else list(st)
        tr = float(metadata["RepetitionTime"])
        data, ref_time = slice_time_correct(data, tr, times,
                                            slice_axis=AXES[direction])
        return {"out_file": native_image(data, img.affine, tr=tr), "ref_time": ref_time,
                "note": f"slice-timing corrected to {ref_time:.4f} s within the TR (Fourier shift)"}
