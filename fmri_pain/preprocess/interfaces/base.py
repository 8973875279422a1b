"""The base of the preprocessing interfaces: one step function per node, outputs saved by file name."""
from __future__ import annotations

import json
import os
from typing import Any

import nibabel as nib
import numpy as np
from nipype.interfaces.base import File, SimpleInterface, isdefined


def saved_file(filename: str, desc: str) -> File:
    """An output of a :class:`StepInterface` saved as ``filename`` in the node's working directory."""
    return File(exists=True, desc=desc, filename=filename)


class StepInterface(SimpleInterface):
    """A Nipype interface that runs one step function and saves what it returns.

    Subclasses declare ``input_spec`` and ``output_spec`` (file outputs as :func:`saved_file`) and
    implement :meth:`_step`, which receives every defined input by name and returns
    ``{output name: value}``. The value of a file output is saved by :func:`save` under its file name
    and the output set to that absolute path (a ``str`` value is a path already, e.g. an input passed
    through); other outputs are set to the value.
    """

    def _step(self, **inputs: Any) -> dict[str, Any]:
        raise NotImplementedError

    def _run_interface(self, runtime):
        inputs = {name: value for name, value in self.inputs.get().items() if isdefined(value)}
        files = {name: trait.filename
                 for name, trait in self.output_spec.class_traits(filename=lambda v: v is not None).items()}
        for name, value in self._step(**inputs).items():
            if name in files and not isinstance(value, str):
                value = save(value, os.path.abspath(files[name]))
            self._results[name] = value
        return runtime


def save(value: Any, path: str) -> str:
    """Write ``value`` to ``path`` by its extension and return ``path``.

    ``.nii``/``.nii.gz``: a NIfTI image; ``.json``: JSON; ``.tsv``: a DataFrame (NaN as ``n/a``);
    ``.npz``: a dict of arrays; ``.png``: a matplotlib figure (closed once saved).
    """
    if path.endswith((".nii", ".nii.gz")):
        nib.save(value, path)
    elif path.endswith(".json"):
        with open(path, "w") as fh:
            json.dump(value, fh, indent=1)
    elif path.endswith(".tsv"):
        value.to_csv(path, sep="\t", index=False, na_rep="n/a")
    elif path.endswith(".npz"):
        np.savez(path, **value)
    elif path.endswith(".png"):
        import matplotlib.pyplot as plt

        value.savefig(path, dpi=80, bbox_inches="tight")
        plt.close(value)
    else:
        raise ValueError(f"no writer for {path}")
    return path


def read_series(path: str) -> tuple[nib.Nifti1Image, np.ndarray]:
    """A NIfTI image read whole into memory (ISA-L gzip when installed) and its data as float32."""
    from fmri_pain.bids.nifti import load_in_memory

    img = load_in_memory(path)
    data = np.asarray(img.dataobj, dtype=np.float32)
    # an image over the array alone: the decompressed bytes behind the proxy are freed
    return nib.Nifti1Image(data, img.affine, img.header), data


def native_image(data: np.ndarray, affine: np.ndarray, dtype=np.float32, tr: float | None = None) -> nib.Nifti1Image:
    """An image on a native (scanner) grid: qform code 1 (scanner), units mm / s, the TR as 4th zoom."""
    img = nib.Nifti1Image(np.asarray(data, dtype=dtype), affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    if tr is not None:
        img.header.set_zooms(img.header.get_zooms()[:3] + (float(tr),))
    return img


def mni_image(data: np.ndarray, affine: np.ndarray, dtype=np.float32, tr: float | None = None,
              units: bool = False) -> nib.Nifti1Image:
    """An image on the MNI grid: sform and qform code 4 (MNI); optionally units mm / s and the TR."""
    img = nib.Nifti1Image(np.asarray(data, dtype=dtype), affine)
    if units:
        img.header.set_xyzt_units("mm", "sec")
    if tr:
        img.header.set_zooms(img.header.get_zooms()[:3] + (tr,))
    img.set_sform(affine, code=4)
    img.set_qform(affine, code=4)
    return img


def xfm_record(kind: str, matrix: np.ndarray, transforms: list[str] | None = None, **extra: Any) -> dict:
    """A transform as it travels between nodes: ``{"kind", "matrix", "transforms", **extra}`` (pull)."""
    return {"kind": kind, "matrix": np.asarray(matrix).tolist(), "transforms": transforms or [], **extra}


def read_xfm(path: str):
    """The :class:`~fmri_pain.preprocess.registration.Registration` of a transform file, and its record."""
    from fmri_pain.preprocess.registration import Registration

    with open(path) as fh:
        d = json.load(fh)
    return Registration(matrix=np.asarray(d["matrix"]), kind=d["kind"], transforms=d["transforms"]), d
