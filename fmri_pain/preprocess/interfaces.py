"""Nipype interfaces: thin file-level wrappers over the pure functions of this package.

Each interface reads its inputs, calls one pure function and writes its
outputs in the node's working directory (nipype caches them there, so a re-run
reuses finished nodes).  Transforms travel between nodes as small JSON files
(``{"kind", "matrix", "transforms"}``, pull convention, see :mod:`.transforms`).
"""
from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)


def _out(name: str) -> str:
    return os.path.abspath(name)


def _save(data: np.ndarray, affine: np.ndarray, name: str, dtype=np.float32, tr: float | None = None) -> str:
    img = nib.Nifti1Image(np.asarray(data, dtype=dtype), affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1 if tr is None else 1)
    if tr is not None:
        img.header.set_zooms(img.header.get_zooms()[:3] + (float(tr),))
    path = _out(name)
    nib.save(img, path)
    return path


def write_xfm(path: str, kind: str, matrix: np.ndarray, transforms: list[str] | None = None, **extra) -> str:
    with open(path, "w") as fh:
        json.dump({"kind": kind, "matrix": np.asarray(matrix).tolist(), "transforms": transforms or [], **extra},
                  fh, indent=1)
    return path


def read_xfm(path: str):
    from fmri_pain.preprocess.registration import Registration

    with open(path) as fh:
        d = json.load(fh)
    return Registration(matrix=np.asarray(d["matrix"]), kind=d["kind"], transforms=d["transforms"]), d


# ---------------------------------------------------------------------------------------------- non-steady
class _NonSteadyInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="raw 4D BOLD")
    dummy_scans = traits.Either(traits.Int, traits.Str("auto"), usedefault=True, desc="'auto' or a count")


class _NonSteadyOutputSpec(TraitedSpec):
    n_dummy = traits.Int(desc="initial non-steady-state volumes")
    detected = traits.Bool(desc="True when the count was detected rather than given")


class NonSteadyState(SimpleInterface):
    """Count initial non-steady-state volumes (given, or detected like fMRIPrep)."""

    input_spec = _NonSteadyInputSpec
    output_spec = _NonSteadyOutputSpec

    def _run_interface(self, runtime):
        from fmri_pain.preprocess.motion import detect_nonsteady

        img = nib.load(self.inputs.in_file)
        n_vol = img.shape[-1]
        if isinstance(self.inputs.dummy_scans, int):
            n = self.inputs.dummy_scans
            self._results["detected"] = False
        else:
            n = detect_nonsteady(np.asarray(img.dataobj, dtype=np.float32))
            self._results["detected"] = True
        if n >= n_vol - 2:
            raise ValueError(f"{self.inputs.in_file}: {n} non-steady-state volumes leave too few of {n_vol}")
        self._results["n_dummy"] = int(n)
        return runtime


# ---------------------------------------------------------------------------------------------- realignment
class _RealignInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True)
    n_dummy = traits.Int(0, usedefault=True)
    n_iter = traits.Int(12, usedefault=True)


class _RealignOutputSpec(TraitedSpec):
    out_motion = File(exists=True, desc="npz: matrices (t,4,4), params (t,6), center (3,)")
    out_params = File(exists=True, desc="TSV of the six motion parameters")
    out_boldref = File(exists=True, desc="mean realigned EPI (native)")
    out_mask = File(exists=True, desc="EPI brain mask (native)")


class Realign(SimpleInterface):
    """Rigid head-motion estimation (:func:`.motion.realign`)."""

    input_spec = _RealignInputSpec
    output_spec = _RealignOutputSpec

    def _run_interface(self, runtime):
        import pandas as pd
        from nilearn.masking import compute_epi_mask

        from fmri_pain.preprocess.confounds import MOTION_COLUMNS
        from fmri_pain.preprocess.motion import realign, rms_displacement

        img = nib.load(self.inputs.in_file)
        data = np.asarray(img.dataobj, dtype=np.float32)
        skip = self.inputs.n_dummy
        res = realign(data, img.affine, ref_index=skip, n_iter=self.inputs.n_iter, exclude=skip)
        motion = _out("motion.npz")
        np.savez(motion, matrices=res.matrices, params=res.params, center=res.center,
                 rmsd=rms_displacement(res.matrices, res.center))
        self._results["out_motion"] = motion
        params = _out("motion_params.tsv")
        pd.DataFrame(res.params, columns=list(MOTION_COLUMNS)).to_csv(params, sep="\t", index=False)
        self._results["out_params"] = params
        self._results["out_boldref"] = _save(res.reference, img.affine, "boldref.nii.gz")
        ref_img = nib.load(self._results["out_boldref"])
        mask = np.asarray(compute_epi_mask(ref_img).dataobj, dtype=np.uint8)
        self._results["out_mask"] = _save(mask, img.affine, "boldref_mask.nii.gz", dtype=np.uint8)
        return runtime


# ---------------------------------------------------------------------------------------------- slice timing
class _STCInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True)
    metadata = traits.Dict(mandatory=True, desc="BOLD JSON sidecar (RepetitionTime, SliceTiming ...)")
    enabled = traits.Bool(True, usedefault=True)


class _STCOutputSpec(TraitedSpec):
    out_file = File(exists=True)
    ref_time = traits.Either(None, traits.Float, desc="StartTime of the corrected series (s)")
    note = traits.Str()


class SliceTiming(SimpleInterface):
    """Slice-timing correction from ``SliceTiming``; passes the input through with a note otherwise."""

    input_spec = _STCInputSpec
    output_spec = _STCOutputSpec

    def _run_interface(self, runtime):
        from fmri_pain.preprocess.slice_timing import AXES, slice_time_correct

        meta = self.inputs.metadata
        st = meta.get("SliceTiming")
        if not self.inputs.enabled:
            self._results.update(out_file=self.inputs.in_file, ref_time=None,
                                 note="slice-timing correction disabled in the spec")
            return runtime
        if not st:
            self._results.update(out_file=self.inputs.in_file, ref_time=None,
                                 note="slice-timing correction skipped: no SliceTiming in the sidecar")
            return runtime
        if len(set(np.round(st, 6))) == 1:
            self._results.update(out_file=self.inputs.in_file, ref_time=None,
                                 note="slice-timing correction skipped: all slices acquired together")
            return runtime
        img = nib.load(self.inputs.in_file)
        direction = meta.get("SliceEncodingDirection", "k")
        if direction not in AXES:
            raise ValueError(f"{self.inputs.in_file}: unknown SliceEncodingDirection {direction!r}")
        axis = AXES[direction]
        times = list(st)[::-1] if direction.endswith("-") else list(st)
        data, ref_time = slice_time_correct(np.asarray(img.dataobj, dtype=np.float32),
                                            float(meta["RepetitionTime"]), times, slice_axis=axis)
        out = _save(data, img.affine, "bold_stc.nii", tr=float(meta["RepetitionTime"]))
        self._results.update(out_file=out, ref_time=ref_time,
                             note=f"slice-timing corrected to {ref_time:.4f} s within the TR (Fourier shift)")
        return runtime


# ---------------------------------------------------------------------------------------------- anatomical
class _AnatNormInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="T1w (raw)")
    kind = traits.Enum("affine", "rigid", "syn", usedefault=True)
    resolution = traits.Float(3.0, usedefault=True, desc="template resolution for registration (mm)")


class _AnatNormOutputSpec(TraitedSpec):
    out_brain = File(exists=True, desc="skull-stripped T1w (native)")
    out_mask = File(exists=True, desc="T1w brain mask (native)")
    out_xfm = File(exists=True, desc="JSON: MNI -> T1w pull transform")
    out_std = File(exists=True, desc="T1w brain resampled to MNI (1 interpolation)")


class AnatNormalize(SimpleInterface):
    """Template-based brain extraction and normalization of the T1w to MNI152 (antspyx).

    The T1w is registered (with the template's dilated brain mask restricting
    the metric) and the template brain mask pulled back to the T1w defines
    the brain.  A second registration of the extracted brain refines the map.
    """

    input_spec = _AnatNormInputSpec
    output_spec = _AnatNormOutputSpec

    def _run_interface(self, runtime):
        from scipy import ndimage

        from fmri_pain.preprocess.registration import map_points, register
        from fmri_pain.preprocess.templates import on_grid, output_grid, template_t1
        from fmri_pain.preprocess.transforms import grid_points

        img = nib.load(self.inputs.in_file)
        if img.ndim != 3:
            raise ValueError(f"{self.inputs.in_file}: T1w must be 3D, got shape {img.shape}")
        t1 = np.asarray(img.dataobj, dtype=np.float32)
        tpl, tpl_aff = template_t1(self.inputs.resolution)
        tpl_mask = on_grid("brain", tpl.shape, tpl_aff) >= 0.5
        reg_mask = ndimage.binary_dilation(tpl_mask, iterations=2)
        reg = register(tpl, tpl_aff, t1, img.affine, kind="affine", fixed_mask=reg_mask)
        # template brain mask -> T1w grid: evaluate at the MNI point of each T1w voxel
        inv = np.linalg.inv(reg.matrix)
        mni_pts = grid_points(t1.shape, inv @ img.affine)
        mask_frac = on_points("brain", mni_pts)
        brain_mask = ndimage.binary_dilation(mask_frac >= 0.5, iterations=1)
        brain = t1 * brain_mask
        kind = self.inputs.kind
        if kind != "affine":
            reg = register(tpl, tpl_aff, brain, img.affine, kind=kind, fixed_mask=reg_mask,
                           keep_dir=os.path.abspath("xfm"))
        else:
            reg = register(tpl, tpl_aff, brain, img.affine, kind="affine", fixed_mask=reg_mask)
        self._results["out_brain"] = _save(brain, img.affine, "t1w_brain.nii.gz")
        self._results["out_mask"] = _save(brain_mask, img.affine, "t1w_mask.nii.gz", dtype=np.uint8)
        self._results["out_xfm"] = write_xfm(_out("std_to_t1w.json"), reg.kind, reg.matrix, reg.transforms,
                                             route="T1w")
        # T1w brain in MNI at 2 mm (report / overlay); one interpolation
        shape, aff = output_grid(2.0)
        pts = map_points(reg, grid_points(shape, aff).reshape(-1, 3))
        vox = (pts - img.affine[:3, 3]) @ np.linalg.inv(img.affine[:3, :3]).T
        std = ndimage.map_coordinates(brain, vox.T, order=1, mode="constant").reshape(shape)
        self._results["out_std"] = _save(std, aff, "t1w_space-MNI.nii.gz")
        return runtime


def on_points(kind: str, points: np.ndarray) -> np.ndarray:
    """A nilearn template image evaluated (linear) at world points ``(..., 3)``."""
    from scipy import ndimage

    from fmri_pain.preprocess.templates import _nilearn_1mm

    data, aff = _nilearn_1mm(kind)
    vox = (points - aff[:3, 3]) @ np.linalg.inv(aff[:3, :3]).T
    return ndimage.map_coordinates(data, np.moveaxis(vox, -1, 0), order=1, mode="constant")


# ---------------------------------------------------------------------------------------------- coregistration
class _CoregInputSpec(BaseInterfaceInputSpec):
    boldref = File(exists=True, mandatory=True)
    t1w_brain = File(exists=True, desc="skull-stripped T1w; absent: EPI-template route")
    t1w_mask = File(exists=True)
    kind = traits.Enum("rigid", "affine", usedefault=True)
    std_kind = traits.Enum("affine", "rigid", "syn", usedefault=True, desc="EPI-template route model")
    resolution = traits.Float(3.0, usedefault=True)


class _CoregOutputSpec(TraitedSpec):
    out_xfm = File(exists=True, desc="JSON: T1w -> EPI reference (or MNI -> EPI reference) pull transform")
    route = traits.Str(desc="'T1w' or 'EPI-template'")


class Coregister(SimpleInterface):
    """EPI reference -> T1w (rigid, mutual information); without a T1w, EPI reference -> MNI directly."""

    input_spec = _CoregInputSpec
    output_spec = _CoregOutputSpec

    def _run_interface(self, runtime):
        from scipy import ndimage

        from fmri_pain.preprocess.registration import register
        from fmri_pain.preprocess.templates import on_grid, template_t1

        ref = nib.load(self.inputs.boldref)
        ref_data = np.asarray(ref.dataobj, dtype=np.float32)
        if isdefined(self.inputs.t1w_brain) and self.inputs.t1w_brain:
            from fmri_pain.preprocess.templates import downsample

            t1 = nib.load(self.inputs.t1w_brain)
            # register on a grid no finer than the registration resolution (time grows with the fixed grid)
            t1_data, t1_aff = downsample(np.asarray(t1.dataobj, dtype=np.float32), t1.affine,
                                         self.inputs.resolution)
            mask = None
            if isdefined(self.inputs.t1w_mask):
                m, _ = downsample(np.asarray(nib.load(self.inputs.t1w_mask).dataobj, dtype=np.float32),
                                  t1.affine, self.inputs.resolution)
                mask = ndimage.binary_dilation(m > 0.5, iterations=2)
            reg = register(t1_data, t1_aff, ref_data, ref.affine, kind=self.inputs.kind, fixed_mask=mask)
            self._results["out_xfm"] = write_xfm(_out("t1w_to_boldref.json"), reg.kind, reg.matrix, route="T1w")
            self._results["route"] = "T1w"
        else:
            tpl, tpl_aff = template_t1(self.inputs.resolution)
            mask = ndimage.binary_dilation(on_grid("brain", tpl.shape, tpl_aff) >= 0.5, iterations=2)
            kind = self.inputs.std_kind
            reg = register(tpl, tpl_aff, ref_data, ref.affine, kind=kind, fixed_mask=mask,
                           keep_dir=os.path.abspath("xfm") if kind == "syn" else None)
            self._results["out_xfm"] = write_xfm(_out("std_to_boldref.json"), reg.kind, reg.matrix,
                                                 reg.transforms, route="EPI-template")
            self._results["route"] = "EPI-template"
        return runtime


# ---------------------------------------------------------------------------------------------- resampling
class _ResampleInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="slice-time corrected (or raw) BOLD")
    motion = File(exists=True, mandatory=True)
    boldref = File(exists=True, mandatory=True)
    boldref_mask = File(exists=True, mandatory=True)
    coreg_xfm = File(exists=True, mandatory=True)
    std_xfm = File(exists=True, desc="MNI -> T1w transform (absent on the EPI-template route)")
    order = traits.Int(3, usedefault=True)


class _ResampleOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="BOLD in MNI space at the BOLD resolution")
    out_mask = File(exists=True, desc="brain mask in MNI space")
    out_boldref = File(exists=True, desc="EPI reference in MNI space")


class ResampleToStd(SimpleInterface):
    """Compose motion, coregistration and normalization; interpolate each volume once."""

    input_spec = _ResampleInputSpec
    output_spec = _ResampleOutputSpec

    def _run_interface(self, runtime):
        from fmri_pain.preprocess.registration import map_points
        from fmri_pain.preprocess.resample import resample_series, to_volume
        from fmri_pain.preprocess.templates import on_grid, output_grid
        from fmri_pain.preprocess.transforms import apply_affine, grid_points

        img = nib.load(self.inputs.in_file)
        zooms = img.header.get_zooms()
        tr = float(zooms[3]) if len(zooms) > 3 else None
        shape, aff = output_grid(tuple(float(z) for z in zooms[:3]))
        brain_frac = on_grid("brain", shape, aff)
        # output points: a generous box around the template brain (background stays 0)
        from scipy import ndimage

        region = ndimage.binary_dilation(brain_frac > 0.01, iterations=2)
        index = np.flatnonzero(region.ravel())
        pts = grid_points(shape, aff).reshape(-1, 3)[index]
        coreg, cdict = read_xfm(self.inputs.coreg_xfm)
        if cdict.get("route") == "EPI-template":
            ref_pts = map_points(coreg, pts)
        else:
            if not isdefined(self.inputs.std_xfm):
                raise ValueError("T1w route needs the MNI -> T1w transform")
            std, _ = read_xfm(self.inputs.std_xfm)
            ref_pts = apply_affine(coreg.matrix, map_points(std, pts))
        motion = np.load(self.inputs.motion)["matrices"]
        data = np.asarray(img.dataobj, dtype=np.float32)
        if motion.shape[0] != data.shape[-1]:
            raise ValueError(f"{self.inputs.in_file}: {data.shape[-1]} volumes but {motion.shape[0]} motion matrices")
        values, coverage = resample_series(data, img.affine, ref_pts, motion, order=self.inputs.order)
        del data
        bold = to_volume(values, index, shape)
        del values
        out_img = nib.Nifti1Image(bold, aff)
        out_img.header.set_data_dtype(np.float32)
        out_img.header.set_xyzt_units("mm", "sec")
        if tr:
            out_img.header.set_zooms(out_img.header.get_zooms()[:3] + (tr,))
        out_img.set_sform(aff, code=4)
        out_img.set_qform(aff, code=4)
        self._results["out_file"] = os.path.abspath("bold_std.nii")  # uncompressed: gzip of a 4D series costs seconds
        nib.save(out_img, self._results["out_file"])
        # EPI reference and its native mask through the same static chain (no motion)
        ref = nib.load(self.inputs.boldref)
        ref_vals, _ = resample_series(np.asarray(ref.dataobj, dtype=np.float32)[..., None], ref.affine,
                                      ref_pts, None, order=self.inputs.order)
        ref_std = to_volume(ref_vals[:, 0], index, shape)
        native_mask = nib.load(self.inputs.boldref_mask)
        mvals, _ = resample_series(np.asarray(native_mask.dataobj, dtype=np.float32)[..., None],
                                   native_mask.affine, ref_pts, None, order=1)
        mask = to_volume(((mvals[:, 0] >= 0.5) & coverage).astype(np.uint8), index, shape)
        mask &= (brain_frac >= 0.5).astype(np.uint8)
        out = {}
        for key, arr, dtype, name in (("out_boldref", ref_std, np.float32, "boldref_std.nii.gz"),
                                      ("out_mask", mask, np.uint8, "mask_std.nii.gz")):
            im = nib.Nifti1Image(arr.astype(dtype), aff)
            im.set_sform(aff, code=4)
            im.set_qform(aff, code=4)
            out[key] = os.path.abspath(name)
            nib.save(im, out[key])
        self._results.update(out)
        return runtime


# ---------------------------------------------------------------------------------------------- confounds
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
    out_file = File(exists=True, desc="confounds TSV (fMRIPrep columns)")
    out_json = File(exists=True, desc="confounds JSON sidecar")


class Confounds(SimpleInterface):
    """fMRIPrep-style confounds table (:func:`.confounds.compute_confounds`)."""

    input_spec = _ConfoundsInputSpec
    output_spec = _ConfoundsOutputSpec

    def _run_interface(self, runtime):
        from fmri_pain.preprocess.confounds import compute_confounds
        from fmri_pain.preprocess.templates import tissue_masks

        img = nib.load(self.inputs.in_file)
        data = np.asarray(img.dataobj, dtype=np.float32)
        brain = np.asarray(nib.load(self.inputs.mask).dataobj) > 0
        tissues = tissue_masks(data.shape[:3], img.affine)
        motion = np.load(self.inputs.motion)
        table, meta = compute_confounds(
            data, brain, tissues["wm"], tissues["csf"], motion["params"], self.inputs.tr,
            n_dummy=self.inputs.n_dummy, rmsd=motion["rmsd"],
            n_acompcor=self.inputs.n_acompcor, n_tcompcor=self.inputs.n_tcompcor,
            high_pass=self.inputs.high_pass, fd_threshold=self.inputs.fd_threshold,
            dvars_threshold=self.inputs.dvars_threshold,
        )
        out = _out("confounds.tsv")
        table.to_csv(out, sep="\t", index=False, na_rep="n/a")
        with open(_out("confounds.json"), "w") as fh:
            json.dump(meta, fh, indent=1)
        self._results.update(out_file=out, out_json=_out("confounds.json"))
        return runtime


# ---------------------------------------------------------------------------------------------- QC
class _QCInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True)
    mask = File(exists=True, mandatory=True)
    boldref = File(exists=True, mandatory=True)
    confounds = File(exists=True, mandatory=True)
    tr = traits.Float(mandatory=True)
    n_dummy = traits.Int(0, usedefault=True)
    title = traits.Str("", usedefault=True)


class _QCOutputSpec(TraitedSpec):
    out_tsnr = File(exists=True)
    out_metrics = File(exists=True)
    out_carpet = File(exists=True)
    out_overlay = File(exists=True)


class QualityControl(SimpleInterface):
    """tSNR map, motion summary and the carpet / registration figures of one run."""

    input_spec = _QCInputSpec
    output_spec = _QCOutputSpec

    def _run_interface(self, runtime):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import pandas as pd

        from fmri_pain.preprocess.qc import carpet_figure, overlay_figure, qc_metrics, tsnr
        from fmri_pain.preprocess.templates import template_t1

        img = nib.load(self.inputs.in_file)
        mask_img = nib.load(self.inputs.mask)
        mask = np.asarray(mask_img.dataobj) > 0
        tsnr_map = tsnr(np.asarray(img.dataobj, dtype=np.float32), skip=self.inputs.n_dummy) * mask
        self._results["out_tsnr"] = _save(tsnr_map, img.affine, "tsnr.nii.gz")
        conf = pd.read_csv(self.inputs.confounds, sep="\t", na_values="n/a")
        metrics = qc_metrics(tsnr_map, mask, conf)
        with open(_out("qc.json"), "w") as fh:
            json.dump(metrics, fh, indent=1)
        self._results["out_metrics"] = _out("qc.json")
        fig = carpet_figure(img, mask_img, conf, self.inputs.tr, title=self.inputs.title)
        fig.savefig(_out("carpet.png"), dpi=80, bbox_inches="tight")
        plt.close(fig)
        tpl, tpl_aff = template_t1(2.0)
        fig = overlay_figure(nib.load(self.inputs.boldref), nib.Nifti1Image(tpl, tpl_aff),
                             title=f"{self.inputs.title}: mean EPI in MNI, template edges")
        fig.savefig(_out("overlay.png"), dpi=80, bbox_inches="tight")
        plt.close(fig)
        self._results["out_carpet"] = _out("carpet.png")
        self._results["out_overlay"] = _out("overlay.png")
        return runtime
