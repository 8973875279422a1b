"""Rendering: raw native-space BOLD with motion and slice timing, then the 'perfect' preprocessing."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from fmri_pain.simulate.model import DT, NOISE, ROIS, TAPER_MM, RunPlan, rigid_matrix


def _roi_weights(xyz: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Soft-sphere activation weight (K, n) at MNI points ``xyz`` (3, n): 1 inside, Gaussian taper outside."""
    d = np.sqrt(((xyz[None, :, :] - centres[:, :, None]) ** 2).sum(axis=1))
    excess = np.maximum(d - radii[:, None], 0.0)
    return np.exp(-0.5 * (excess / TAPER_MM) ** 2)


def bias_field(xyz: np.ndarray, coefs: np.ndarray) -> np.ndarray:
    """Smooth receive-coil intensity inhomogeneity (about +-10 %) at scanner coordinates ``xyz`` (3, ...)."""
    u = xyz / 100.0
    return 1.0 + coefs[0] * u[0] + coefs[1] * u[1] + coefs[2] * u[2] + coefs[3] * (u[0] ** 2 + u[1] ** 2)


def render_raw(
    plan: RunPlan,
    s0_fine: np.ndarray,
    fine_affine: np.ndarray,
    native_shape: tuple[int, int, int],
    native_affine: np.ndarray,
    native_from_mni: np.ndarray,
    slice_times: np.ndarray,
    bias_coefs: np.ndarray,
) -> np.ndarray:
    """Raw BOLD (float32, *native_shape, T) in the subject's native space.

    Each volume samples the MNI-space model at ``mni = inv(native_from_mni) @ inv(M_t) @ scanner``
    (one linear interpolation of the baseline image composing head position and motion), and each
    slice carries the signal at its own acquisition time.
    """
    n = plan.n_volumes
    rng = np.random.default_rng(plan.noise_seed)
    mni_from_native = np.linalg.inv(native_from_mni)
    inv_fine = np.linalg.inv(fine_affine)
    scanner = native_affine
    xyz_nat = _grid_mm(native_shape, native_affine)
    bias = bias_field(xyz_nat, bias_coefs).astype(np.float32)
    # Scanner drift lives in native (scanner) space: constant + linear gradients times 2 slow bases.
    tt = np.linspace(-1.0, 1.0, n)
    bases = np.stack([tt, 1.5 * tt**2 - 0.5])
    u = np.concatenate([np.ones((1, *native_shape)), xyz_nat / 100.0])
    drift_fields = np.tensordot(plan.drift_coefs, u, axes=(1, 0)).astype(np.float32)  # (2, *shape)

    timecourses = plan.roi_timecourses() / 100.0  # (K, n_fine) fraction
    centres = np.array([r.centre for r in ROIS])
    radii = np.array([r.radius for r in ROIS])
    # Candidate native voxels that can ever see an ROI (ROIs + taper + head offset + motion margin).
    ref_pos = native_from_mni @ np.vstack([centres.T, np.ones(len(ROIS))])
    d = np.sqrt(((xyz_nat.reshape(3, -1)[None] - ref_pos[:3].T[:, :, None]) ** 2).sum(axis=1))
    cand = np.flatnonzero((d <= (radii[:, None] + 4 * TAPER_MM + 8.0)).any(axis=0))
    cand_ijk = np.vstack([np.array(np.unravel_index(cand, native_shape), dtype=float), np.ones(cand.size)])
    cand_z = cand_ijk[2].astype(int)

    noise = ar1_unit(rng, native_shape, n, plan.rho)
    phys = np.float32(NOISE["physio_fraction"])
    thermal = np.float32(NOISE["thermal_sd"])
    out = np.empty((*native_shape, n), dtype=np.float32, order="F")
    g = plan.global_signal
    for t in range(n):
        pose = rigid_matrix(plan.motion[t])
        to_mni = mni_from_native @ np.linalg.inv(pose) @ scanner  # native voxel index -> MNI mm
        q = inv_fine @ to_mni
        base = ndimage.affine_transform(s0_fine, q[:3, :3], q[:3, 3], output_shape=native_shape, order=1)
        times = t * plan.tr + slice_times  # acquisition time of every slice
        fidx = np.minimum(np.round(times / DT).astype(int), g.size - 1)
        rel = 1.0 + drift_fields[0] * bases[0, t] + drift_fields[1] * bases[1, t]
        rel += g[fidx][None, None, :].astype(np.float32)
        xyz = (to_mni @ cand_ijk)[:3]
        w = _roi_weights(xyz, centres, radii)
        act = (w * timecourses[:, fidx[cand_z]]).sum(axis=0)
        rel.reshape(-1)[cand] += act.astype(np.float32)
        if t in plan.spike_slices:
            slices, drop = plan.spike_slices[t]
            rel[:, :, slices] *= np.float32(1.0 - drop)
        vol = base * bias * rel
        sd = np.sqrt((phys * vol) ** 2 + thermal**2)
        vol += sd * noise[t]
        out[..., t] = np.abs(vol)  # magnitude images: background noise is Rician-like, never negative
    return out


def ar1_unit(rng: np.random.Generator, shape: tuple[int, ...], n: int, rho: float) -> np.ndarray:
    """Unit-variance stationary AR(1) noise, shape (n, *shape), float32, spatially slightly smooth."""
    out = rng.standard_normal((n, *shape), dtype=np.float32)
    # k-space apodisation makes image noise slightly correlated between neighbours
    ndimage.gaussian_filter(out, (0, 0.45, 0.45, 0.45), output=out, truncate=2.5)
    out /= np.float32(out.std())
    scale = np.float32(np.sqrt(1.0 - rho**2))
    r = np.float32(rho)
    for t in range(1, n):
        out[t] *= scale
        out[t] += r * out[t - 1]
    return out


def _grid_mm(shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
    ijk = np.indices(shape, dtype=np.float64).reshape(3, -1)
    return (affine[:3, :3] @ ijk + affine[:3, 3:4]).reshape((3, *shape))


def slice_time_correct(data: np.ndarray, slice_times: np.ndarray, tr: float, ref_time: float) -> np.ndarray:
    """Linear temporal interpolation of every slice (axis 2) to ``t * tr + ref_time``."""
    out = np.empty_like(data, order="F")
    n = data.shape[-1]
    for z, st in enumerate(slice_times):
        shift = (ref_time - st) / tr  # in volumes; |shift| < 1
        src = np.arange(n) + shift
        lo = np.clip(np.floor(src).astype(int), 0, n - 1)
        hi = np.clip(lo + 1, 0, n - 1)
        f = np.clip(src - np.floor(src), 0.0, 1.0).astype(np.float32)
        f[src >= n - 1] = 0.0
        sl = data[:, :, z, :]
        out[:, :, z, :] = sl[..., lo] * (1 - f) + sl[..., hi] * f
    return out


def resample_to_mni(
    data: np.ndarray,
    motion: np.ndarray,
    native_affine: np.ndarray,
    native_from_mni: np.ndarray,
    mni_shape: tuple[int, int, int],
    mni_affine: np.ndarray,
) -> np.ndarray:
    """Realign and normalise in one interpolation per volume using the true transforms."""
    inv_nat = np.linalg.inv(native_affine)
    # Only the MNI voxels that can fall inside the native field of view need interpolating.
    corners = np.array(np.meshgrid(*[[0, s - 1] for s in data.shape[:3]], indexing="ij")).reshape(3, -1)
    fov = np.linalg.inv(mni_affine) @ native_affine @ np.vstack([corners, np.ones(8)])
    lo = np.clip(np.floor(fov[:3].min(axis=1)).astype(int) - 3, 0, None)
    hi = np.minimum(np.ceil(fov[:3].max(axis=1)).astype(int) + 4, mni_shape)
    sub_shape = tuple(int(v) for v in hi - lo)
    shift = np.eye(4)
    shift[:3, 3] = lo
    out = np.zeros((*mni_shape, data.shape[-1]), dtype=np.float32, order="F")
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    for t in range(data.shape[-1]):
        q = inv_nat @ rigid_matrix(motion[t]) @ native_from_mni @ mni_affine @ shift
        out[(*box, t)] = ndimage.affine_transform(
            data[..., t], q[:3, :3], q[:3, 3], output_shape=sub_shape, order=1, mode="constant", cval=0.0
        )
    return out
