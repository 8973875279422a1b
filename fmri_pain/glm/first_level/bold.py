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
from dataclasses import dataclass
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


_TILE_ROWS = 32  # output rows per banded product (fewer: less arithmetic, slower BLAS calls)


@dataclass(frozen=True)
class MaskedSmoothing:
    """What :func:`smooth_masked_block` needs to smooth and mask a run's volumes.

    Attributes
    ----------
    shape : tuple of 3 int
        The BOLD grid.
    tiles : tuple (one per axis, x y z) of tuples of (a, b, lo, hi, weights)
        Output rows ``a:b`` of the axis' product (counted from the mask's first
        index on that axis) take input rows ``lo:hi``, the only non-zero columns
        of the filter matrix's rows ``a:b`` (``weights``, shape (b - a, hi - lo)).
    index : ndarray of int
        The mask's voxels (``np.nonzero`` order) as rows of the last product's
        (z, y, x) box.
    """

    shape: tuple[int, int, int]
    tiles: tuple[tuple[tuple[int, int, int, int, np.ndarray], ...], ...]
    index: np.ndarray


def masked_smoothing(mask: np.ndarray, sigmas: np.ndarray, dtype=np.float32,
                     tile_rows: int = _TILE_ROWS) -> MaskedSmoothing:
    """Plan the smoothing of a run's volumes, outputs only within the mask's bounding box.

    Parameters
    ----------
    mask : ndarray of bool, shape (x, y, z)
        Not empty.
    sigmas : array of 3 floats
        Per-axis sigma in voxels (0: that axis is not smoothed).
    dtype : numpy dtype
        Of the blocks to smooth.
    tile_rows : int
        Output rows per product.

    Returns
    -------
    MaskedSmoothing
    """
    coords = np.nonzero(mask)
    box = [(int(c.min()), int(c.max()) + 1) for c in coords]
    tiles = []
    for n, sigma, (first, stop) in zip(mask.shape, sigmas, box):
        kernel = gaussian_kernel_matrix(n, sigma) if sigma > 0 else np.eye(n)
        axis = []
        for a in range(first, stop, tile_rows):
            b = min(stop, a + tile_rows)
            used = np.flatnonzero(np.any(kernel[a:b] != 0, axis=0))
            lo, hi = int(used[0]), int(used[-1]) + 1
            axis.append((a - first, b - first, lo, hi,
                         np.ascontiguousarray(kernel[a:b, lo:hi], dtype=dtype)))
        tiles.append(tuple(axis))
    extent = [stop - first for first, stop in box]
    index = np.ravel_multi_index([coords[k] - box[k][0] for k in (2, 1, 0)], extent[::-1])
    return MaskedSmoothing(shape=tuple(mask.shape), tiles=tuple(tiles), index=index)


def _smooth_masked(block: np.ndarray, plan: MaskedSmoothing, out: np.ndarray, volumes) -> None:
    # volume by volume, so every volume goes through BLAS calls of the same shapes: a voxel
    # constant over the run stays exactly constant (its rounding cannot depend on the volume)
    for v, dst in zip(volumes, out):
        M = block[..., v].T.reshape(-1, plan.shape[0])  # rows (z, y), columns x; no copy for Fortran
        for axis, tiles in enumerate(plan.tiles):
            # K @ M.T: this axis smoothed and moved to the front of the layout: (x, z, y)
            # after the first product, (y, x, z) after the second, (z, y, x) after the third
            result = np.empty((tiles[-1][1], M.shape[0]), dtype=M.dtype)
            for a, b, lo, hi, weights in tiles:
                np.matmul(weights, M[:, lo:hi].T, out=result[a:b])
            M = result.reshape(-1, plan.shape[axis + 1]) if axis < 2 else result.reshape(-1)
        np.take(M, plan.index, out=dst)


def smooth_masked_block(block: np.ndarray, plan: MaskedSmoothing, out: np.ndarray,
                        volumes: np.ndarray | None = None) -> None:
    """Smooth a block of volumes as nilearn's ``smooth_img`` and keep the mask's voxels.

    Separable Gaussian, one matrix product per axis with the filter's matrix
    (:func:`gaussian_kernel_matrix`), which BLAS runs faster than
    ``gaussian_filter1d``'s line loops; only the products the mask's voxels need
    are computed: each axis' product (one BLAS call per tile of
    :class:`MaskedSmoothing`) skips the filter's zero weights and the rows
    outside the mask's bounding box, and moves the axis to the front of the
    layout, so it needs no transposing copy. Volumes are smoothed one at a time,
    each by calls of the same shapes. The values equal nilearn's to rounding.
    Non-finite values are zeroed first, as nilearn does: a block whose masked
    result is not finite is smoothed again from a zeroed copy (a non-finite
    voxel that reaches no masked voxel changes nothing).

    Parameters
    ----------
    block : ndarray, shape (x, y, z, t)
        Fortran-ordered (as nibabel reads a block) for no copy.
    plan : MaskedSmoothing
        From :func:`masked_smoothing` of the run's mask.
    out : ndarray, shape (len(volumes), n_mask_voxels)
        Written: row ``i`` is volume ``volumes[i]`` at the mask's voxels.
    volumes : array of int, optional
        The block's volumes to smooth (default: all, in order).
    """
    volumes = range(block.shape[3]) if volumes is None else volumes
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite inputs: redone below
        _smooth_masked(block, plan, out, volumes)
    if not np.isfinite(out).all():
        _smooth_masked(np.where(np.isfinite(block), block, 0).astype(block.dtype), plan, out, volumes)


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
                     subject: str | None = None, threads: int = 1,
                     volumes: np.ndarray | None = None
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
    volumes : array of int, optional
        Keep only these volumes (increasing indices: the ones censoring keeps);
        the others are decompressed but neither smoothed nor held. Default: all.

    Returns
    -------
    Y : ndarray of float32, shape (n_volumes_kept, n_voxels)
    mask : ndarray of bool, shape (x, y, z)
    affine : ndarray (4, 4)

    Raises
    ------
    InputError
        Unreadable or non-4D BOLD, unreadable or empty mask.
    ValueError
        ``volumes`` not increasing or out of range (a caller's bug, not the data's).
    """
    img, fobj = _open_bold(bold, subject)
    try:
        return _load_masked(img, bold, mask, fwhm, subject, budget(threads), volumes)
    finally:
        if fobj is not None:
            fobj.close()


def _check_4d(img, bold, subject) -> None:
    if len(img.shape) != 4 or img.shape[3] < 2:
        raise InputError(f"BOLD must be a 4D image, got shape {img.shape}", subject=subject, path=bold)


def bold_volumes(bold: Path | str, subject: str | None = None) -> int:
    """Number of volumes of a 4D BOLD, from its header (the data are not read).

    Raises
    ------
    InputError
        Unreadable or non-4D BOLD.
    """
    img = _load_img(bold, subject, "BOLD")
    _check_4d(img, bold, subject)
    return int(img.shape[3])


def _load_masked(img, bold, mask, fwhm, subject, threads: int = 1, volumes=None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    _check_4d(img, bold, subject)
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
    plan = masked_smoothing(mask_bool, smoothing_sigmas(affine, fwhm))
    kept = np.arange(img.shape[3]) if volumes is None else np.asarray(volumes, dtype=np.int64)
    if kept.size and (np.any(np.diff(kept) <= 0) or kept[0] < 0 or kept[-1] >= img.shape[3]):
        raise ValueError(f"volumes must be increasing indices below {img.shape[3]}")
    Y = np.empty((kept.size, plan.index.size), dtype=np.float32)  # float32 holds int16 exactly

    def process(item: tuple[int, np.ndarray]) -> None:
        start, block = item
        t0 = timing.clocks()
        first, stop = np.searchsorted(kept, [start, start + block.shape[3]])
        if first == stop:  # every volume of the block censored
            return
        smooth_masked_block(np.asarray(block, dtype=Y.dtype), plan, Y[first:stop],
                            volumes=kept[first:stop] - start)
        timing.add("smooth", t0)

    # threads > 1: each thread decompresses its next block itself (no reader thread), so
    # the budget's threads are all that compute and hold blocks
    thread_drain(process, _iter_blocks(img, bold, subject, prefetch=threads == 1), threads)
    return Y, mask_bool, affine


def drop_constant_voxels(Y: np.ndarray, mask: np.ndarray, run: Run
                         ) -> tuple[np.ndarray, np.ndarray, str | None]:
    """Leave voxels whose signal never changes out of the run (they carry no response).

    ``Y`` holds the volumes the fit uses (censored ones left out), so a voxel
    that varies only in censored volumes is constant here too.

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
                         f"run's {Y.shape[0]} volumes fitted: no signal to model",
                         subject=run.subject, path=run.bold)
    mask = mask.copy()
    mask[mask] = ~constant
    message = (f"sub-{run.subject} {run.bold}: {int(constant.sum())} of {constant.size} mask voxels "
               "are constant over the run's fitted volumes and are left out of its maps")
    return Y[:, ~constant], mask, message
