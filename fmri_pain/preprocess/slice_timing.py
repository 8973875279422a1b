"""Slice-timing correction by Fourier phase shift (the method of AFNI's 3dTshift -Fourier)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.fft

AXES = {"i": 0, "j": 1, "k": 2, "i-": 0, "j-": 1, "k-": 2}


def reference_time(slice_times: Sequence[float], fraction: float = 0.5) -> float:
    """Time the series is corrected to: ``first + fraction * (last - first)`` (fMRIPrep's rule)."""
    st = np.asarray(slice_times, dtype=float)
    return float(st.min() + fraction * (st.max() - st.min()))


def shift_series(ts: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Evaluate time series at ``n + shift`` samples (band-limited interpolation).

    Parameters
    ----------
    ts : ndarray (..., n_times)
    shift : ndarray broadcastable to ``ts.shape[:-1]``
        Shift in samples (positive: later in time).

    The linear trend is removed before the FFT and added back at the shifted
    times, and the series is mirrored to twice its length, so the implied
    periodic signal has no jump at the ends.
    """
    ts = np.asarray(ts, dtype=np.float64)
    n = ts.shape[-1]
    t = np.arange(n, dtype=float)
    # least-squares line per series
    tc = t - t.mean()
    slope = (ts * tc).sum(axis=-1, keepdims=True) / (tc @ tc)
    intercept = ts.mean(axis=-1, keepdims=True)
    # the residual and its mirror image written straight into the padded buffer (no extra copies)
    padded = np.empty(ts.shape[:-1] + (2 * n,))
    resid = padded[..., :n]
    np.subtract(ts, intercept, out=resid)
    resid -= slope * tc
    padded[..., n:] = resid[..., ::-1]
    freqs = np.fft.rfftfreq(2 * n)
    shift = np.asarray(shift, dtype=float)[..., None]
    spec = scipy.fft.rfft(padded, axis=-1)
    del padded, resid
    spec *= np.exp(2j * np.pi * freqs * shift)
    shifted = scipy.fft.irfft(spec, n=2 * n, axis=-1)[..., :n]
    shifted += intercept
    shifted += slope * (tc + shift)
    return shifted


def slice_time_correct(
    data: np.ndarray,
    tr: float,
    slice_times: Sequence[float],
    slice_axis: int = 2,
    ref_time: float | None = None,
) -> tuple[np.ndarray, float]:
    """Correct a 4D series so every slice is sampled at ``ref_time`` within each TR.

    Parameters
    ----------
    data : ndarray (x, y, z, t)
    tr : float
        Repetition time (s).
    slice_times : sequence of float
        BIDS ``SliceTiming``: acquisition time (s) of each slice along ``slice_axis``.
    slice_axis : int
        Voxel axis of ``SliceEncodingDirection`` (0, 1 or 2).
    ref_time : float, optional
        Target time within the TR; default :func:`reference_time`.

    Returns
    -------
    corrected : ndarray (float32), ref_time : float
    """
    if data.ndim != 4:
        raise ValueError(f"slice timing needs a 4D series, got shape {data.shape}")
    st = np.asarray(slice_times, dtype=float)
    if st.shape != (data.shape[slice_axis],):
        raise ValueError(
            f"SliceTiming has {st.size} entries but the series has {data.shape[slice_axis]} slices "
            f"along axis {slice_axis}"
        )
    if np.any(st < 0) or np.any(st >= tr + 1e-6):
        raise ValueError(f"SliceTiming values must lie in [0, RepetitionTime={tr}); got {st.min()}..{st.max()}")
    if ref_time is None:
        ref_time = reference_time(st)
    out = np.empty(data.shape, dtype=np.float32)
    moved = np.moveaxis(data, slice_axis, 0)
    out_moved = np.moveaxis(out, slice_axis, 0)
    for k in range(st.size):
        # the sample n of slice k was taken at n*TR + st[k]; we want n*TR + ref_time
        out_moved[k] = shift_series(moved[k], (ref_time - st[k]) / tr)
    return out, float(ref_time)
