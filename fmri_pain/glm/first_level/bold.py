"""Reading a run's BOLD: decompressed once, streamed in blocks, smoothed in 3D and masked.

Each volume is smoothed with the arithmetic of nilearn's ``smooth_img`` and
masked at once, so the 4D array is never held in memory; voxels constant over
the run are left out of its fit.
"""

from __future__ import annotations

import queue
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy.ndimage import gaussian_filter1d

from fmri_pain.bids.runs import Run
from fmri_pain.bids.nifti import igzip as _igzip
from fmri_pain.errors import InputError
from fmri_pain.glm.first_level import timing
from fmri_pain.glm.first_level.threads import budget, thread_drain

_BLOCK_VOLUMES = 16


def smoothing_sigmas(affine: np.ndarray, fwhm: float | None) -> np.ndarray:
    """Gaussian sigmas in voxels per axis, as nilearn's ``_smooth_array``."""
    if not fwhm:
        return np.zeros(3)
    vox_size = np.sqrt(np.sum(np.asarray(affine)[:3, :3] ** 2, axis=0))
    return float(fwhm) / (np.sqrt(8 * np.log(2)) * vox_size)


def gaussian_kernel_matrix(n: int, sigma: float) -> np.ndarray:
    """The (n, n) matrix of ``gaussian_filter1d(x, sigma)`` (reflect mode): ``K @ x``."""
    return gaussian_filter1d(np.eye(n), sigma, axis=0)


def smooth_block(block: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """Smooth each 3D volume of a 4D block with the Gaussian of nilearn's ``smooth_img``.

    Each axis is one matrix product with the filter's (n, n) matrix
    (:func:`gaussian_kernel_matrix`), which BLAS runs 3x faster than
    ``gaussian_filter1d``'s line loops despite the zeros; the result equals
    nilearn's ``smooth_img`` (non-finite values zeroed first) to rounding.

    Parameters
    ----------
    block : ndarray, shape (x, y, z, t)
    sigmas : array of 3 floats
        Per-axis sigma in voxels (0: no smoothing along that axis).

    Returns
    -------
    ndarray, shape (t, z, y, x), C-contiguous
        Volume ``i`` is ``out[i]``; its memory is the volume in Fortran order.
    """
    dtype = block.dtype
    A = np.ascontiguousarray(block.T)  # (t, z, y, x); no copy for nibabel's Fortran blocks
    if not np.all(np.isfinite(A)):
        A = np.where(np.isfinite(A), A, 0).astype(dtype)
    t, nz, ny, nx = A.shape
    if sigmas[0] > 0:
        kx = gaussian_kernel_matrix(nx, sigmas[0]).astype(dtype)
        A = (A.reshape(-1, nx) @ kx.T).reshape(t, nz, ny, nx)
    if sigmas[1] > 0:
        ky = gaussian_kernel_matrix(ny, sigmas[1]).astype(dtype)
        A = np.matmul(ky, A)
    if sigmas[2] > 0:
        kz = gaussian_kernel_matrix(nz, sigmas[2]).astype(dtype)
        A = np.matmul(kz, A.reshape(t, nz, ny * nx)).reshape(t, nz, ny, nx)
    return np.ascontiguousarray(A)


def gather_rows(src: np.ndarray, index: np.ndarray, out: np.ndarray) -> None:
    """``out[i] = src[i, index]`` for every row (the mask's voxels of each smoothed volume).

    One ``np.take`` per row: 2-3x faster than ``np.take(src, index, axis=1, out=out)``
    over the whole block; the same values (a copy). (A numba loop is faster still,
    but loading it from numba's cache costs more per process than it saves.)

    Parameters
    ----------
    src : ndarray, shape (k, n)
    index : ndarray of int, shape (m,)
        Positions in ``[0, n)``.
    out : ndarray, shape (k, m), same dtype as ``src``
    """
    for row, dst in zip(src, out):
        np.take(row, index, out=dst)


def _load_img(path: Path | str, subject: str | None, what: str, keep_open: bool = False):
    try:
        img = nib.load(str(path), keep_file_open=keep_open) if keep_open else nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for bad files
        raise InputError(f"cannot read {what} image: {exc}", subject=subject, path=path) from exc
    return img


def _open_bold(path: Path | str, subject: str | None):
    """Open a NIfTI for sequential reading (ISA-L for .nii.gz when installed)."""
    path = str(path)
    if _igzip is not None and path.endswith(".gz"):
        fobj = None
        try:
            fobj = _igzip.open(path, "rb")
            holder = nib.FileHolder(filename=path, fileobj=fobj)
            img = nib.Nifti1Image.from_file_map({"header": holder, "image": holder})
            return img, fobj
        except Exception:  # not NIfTI-1 or not readable: let nibabel decide and explain
            if fobj is not None:
                fobj.close()
    return _load_img(path, subject, "BOLD", keep_open=True), None


def _read_blocks(img, path, subject) -> Iterator[tuple[int, np.ndarray]]:
    n = img.shape[3]
    try:
        for start in range(0, n, _BLOCK_VOLUMES):
            t0 = timing.clocks()
            block = np.asarray(img.dataobj[..., start:start + _BLOCK_VOLUMES])
            if block.dtype.kind in "iub":
                block = block.astype(np.float32)
            timing.add("decompress", t0)
            yield start, block
    except InputError:
        raise
    except Exception as exc:  # truncated gzip, short file ...
        raise InputError(f"cannot read BOLD data: {exc}", subject=subject, path=path) from exc


def _iter_blocks(img, path, subject, prefetch: bool = True) -> Iterator[tuple[int, np.ndarray]]:
    """The BOLD's blocks of volumes in order, the next one read in a thread meanwhile.

    Decompression (zlib or ISA-L) and the smoothing's BLAS release the GIL, so
    reading block ``k + 1`` overlaps the processing of block ``k``: the same
    blocks, one more in memory. ``prefetch=False`` reads in the caller's thread.
    """
    if not prefetch:
        yield from _read_blocks(img, path, subject)
        return
    slots: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        """Hand ``item`` to the consumer; False when it stopped listening."""
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def reader() -> None:
        try:
            for item in _read_blocks(img, path, subject):
                if not put(item):
                    return
            item = done
        except BaseException as exc:  # handed to the consumer, raised there
            item = exc
        put(item)

    thread = threading.Thread(target=reader, name="bold-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = slots.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()  # the file is closed by the caller: never while the reader reads


def load_masked_bold(bold: Path | str, mask: Path | str | None, fwhm: float | None,
                     subject: str | None = None, threads: int = 1
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a 4D BOLD once, smooth each volume in 3D and keep the voxels of the mask.

    Parameters
    ----------
    bold : path
        4D NIfTI.
    mask : path or None
        Brain mask (non-zero = brain). Resampled (nearest) to the BOLD grid if
        needed. ``None``: nilearn's ``compute_epi_mask`` on the mean image.
    fwhm : float or None
        Smoothing kernel (mm).
    subject : str, optional
        Named in errors.
    threads : int
        Thread budget. 1: blocks are read ahead in a reader thread and smoothed
        and masked in the caller's. More: this many threads each read (under a
        lock), smooth and mask their next block
        (:func:`~fmri_pain.glm.first_level.threads.thread_drain`, one BLAS thread
        each); the same values.

    Returns
    -------
    Y : ndarray of float32, shape (n_scans, n_voxels)
    mask : ndarray of bool, shape (x, y, z)
    affine : ndarray (4, 4)

    Raises
    ------
    InputError
        Unreadable or non-4D BOLD, unreadable or empty mask.
    """
    img, fobj = _open_bold(bold, subject)
    try:
        return _load_masked(img, bold, mask, fwhm, subject, budget(threads))
    finally:
        if fobj is not None:
            fobj.close()


def _load_masked(img, bold, mask, fwhm, subject, threads: int = 1
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if len(img.shape) != 4 or img.shape[3] < 2:
        raise InputError(f"BOLD must be a 4D image, got shape {img.shape}", subject=subject, path=bold)
    shape3, affine = img.shape[:3], img.affine
    if mask is None:
        total = np.zeros(shape3)
        for _, block in _iter_blocks(img, bold, subject):
            total += np.nan_to_num(block).sum(axis=3)
        from nilearn.masking import compute_epi_mask

        mask_bool = np.asarray(
            compute_epi_mask(nib.Nifti1Image(total / img.shape[3], affine)).dataobj
        ).astype(bool)
    else:
        mask_img = _load_img(mask, subject, "mask")
        if mask_img.shape[:3] != shape3 or not np.allclose(mask_img.affine, affine, atol=1e-3):
            from nilearn.image import resample_to_img

            warnings.warn(f"sub-{subject}: mask {mask} resampled to the BOLD grid", stacklevel=2)
            mask_img = resample_to_img(mask_img, nib.Nifti1Image(np.zeros(shape3, np.int8), affine),
                                       interpolation="nearest", force_resample=True,
                                       copy_header=True)
        try:
            mask_bool = np.asarray(mask_img.dataobj).reshape(shape3) != 0
        except Exception as exc:
            raise InputError(f"cannot read mask data: {exc}", subject=subject, path=mask) from exc
    if not mask_bool.any():
        raise InputError("brain mask is empty", subject=subject, path=mask or bold)
    sigmas = smoothing_sigmas(affine, fwhm)
    # positions of the mask's voxels (in np.nonzero order, as mask indexing) in a
    # Fortran-ordered volume: rows of smooth_block's output
    index = np.ravel_multi_index(np.nonzero(mask_bool), shape3, order="F")
    Y = np.empty((img.shape[3], index.size), dtype=np.float32)  # float32 holds int16 exactly

    def process(item: tuple[int, np.ndarray]) -> None:
        start, block = item
        t0 = timing.clocks()
        smoothed = smooth_block(np.asarray(block, dtype=Y.dtype), sigmas)
        timing.add("smooth", t0)
        t0 = timing.clocks()
        k = smoothed.shape[0]
        gather_rows(smoothed.reshape(k, -1), index, Y[start:start + k])
        timing.add("mask", t0)

    # threads > 1: each thread decompresses its next block itself (no reader thread), so
    # the budget's threads are all that compute and hold blocks
    thread_drain(process, _iter_blocks(img, bold, subject, prefetch=threads == 1), threads)
    return Y, mask_bool, affine


def drop_constant_voxels(Y: np.ndarray, mask: np.ndarray, run: Run
                         ) -> tuple[np.ndarray, np.ndarray, str | None]:
    """Leave voxels whose signal never changes out of the run (they carry no response).

    Returns
    -------
    Y, mask : the data and mask without constant voxels
    warning : str or None
        Set when some (not all) voxels were left out.

    Raises
    ------
    InputError
        If every voxel of the mask is constant over the run (no data to fit).
    """
    constant = np.ptp(Y, axis=0) == 0
    if not constant.any():
        return Y, mask, None
    if constant.all():
        raise InputError(f"every one of the {constant.size} voxels in the mask is constant over the "
                         f"run's {Y.shape[0]} volumes: no signal to model",
                         subject=run.subject, path=run.bold)
    mask = mask.copy()
    mask[mask] = ~constant
    message = (f"sub-{run.subject} {run.bold}: {int(constant.sum())} of {constant.size} mask voxels "
               "are constant over the run and are left out of its maps")
    return Y[:, ~constant], mask, message
