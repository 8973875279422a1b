"""Generative model of the simulated trial: ROIs, HRF, block design, subjects, motion, noise."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage, stats

CONDITIONS = ("SCS", "DRGS", "DUAL")
# The six Williams sequences for three treatments (each treatment once per period, each ordered
# pair of treatments once in consecutive periods); subjects are assigned to them in turn.
WILLIAMS = (
    ("SCS", "DRGS", "DUAL"),
    ("DRGS", "DUAL", "SCS"),
    ("DUAL", "SCS", "DRGS"),
    ("SCS", "DUAL", "DRGS"),
    ("DRGS", "SCS", "DUAL"),
    ("DUAL", "DRGS", "SCS"),
)

MOTION_COLUMNS = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
BLOCK_S = 20.0  # stimulator ON 20 s / OFF 20 s, starting with OFF
PERIOD_EFFECT = -0.25  # percent signal change added per period after the first (habituation)
SUBJECT_SD = 0.30  # between-subject SD of an ROI's amplitude (shared across conditions), percent
SESSION_SD = 0.10  # additional subject-by-condition SD, percent
TAPER_MM = 2.0  # activation falls off as a Gaussian of this SD outside an ROI's radius


@dataclass(frozen=True)
class ROI:
    name: str
    centre: tuple[float, float, float]
    radius: float
    hemisphere: str  # "L", "R" or "bilateral"
    pathway: str
    amplitudes: dict[str, float]  # percent signal change ON vs OFF per condition (before scaling)
    active_when_pain_side: str | None = None  # S1 leg area: active only contralateral to the pain

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "center_mni": list(self.centre),
            "radius_mm": self.radius,
            "hemisphere": self.hemisphere,
            "pathway": self.pathway,
            "amplitudes": dict(self.amplitudes),
            "active_when_pain_side": self.active_when_pain_side,
        }


def _amps(scs: float, drgs: float, dual: float) -> dict[str, float]:
    return {"SCS": scs, "DRGS": drgs, "DUAL": dual}


ROIS: tuple[ROI, ...] = (
    # S1 leg area (paracentral lobule); contralateral to the painful leg.
    ROI("S1leg_R", (10.0, -40.0, 66.0), 10.0, "R", "lateral", _amps(0.8, 1.6, 2.0), "left"),
    ROI("S1leg_L", (-10.0, -40.0, 66.0), 10.0, "L", "lateral", _amps(0.8, 1.6, 2.0), "right"),
    ROI("S2_L", (-52.0, -24.0, 18.0), 8.0, "L", "lateral", _amps(1.6, 0.8, 2.0)),
    ROI("S2_R", (52.0, -24.0, 18.0), 8.0, "R", "lateral", _amps(1.6, 0.8, 2.0)),
    ROI("pINS_L", (-38.0, -18.0, 8.0), 8.0, "L", "lateral", _amps(1.0, 1.0, 2.0)),
    ROI("pINS_R", (38.0, -18.0, 8.0), 8.0, "R", "lateral", _amps(1.0, 1.0, 2.0)),
    ROI("thalamus_L", (-12.0, -18.0, 6.0), 7.0, "L", "lateral", _amps(0.8, 0.8, 1.4)),
    ROI("thalamus_R", (12.0, -18.0, 6.0), 7.0, "R", "lateral", _amps(0.8, 0.8, 1.4)),
    ROI("dACC", (0.0, 18.0, 34.0), 10.0, "bilateral", "medial", _amps(0.8, 0.8, 1.8)),
    ROI("DLPFC_R", (42.0, 36.0, 28.0), 10.0, "R", "medial", _amps(0.6, 0.6, 1.0)),
    ROI("control", (-32.0, -82.0, 6.0), 10.0, "L", "none", _amps(0.0, 0.0, 0.0)),
)

# Simulated condition-dependent coupling (``ppi=True``): during stimulator-ON blocks the target
# receives the seed's intrinsic fluctuation with these weights; OFF blocks and other pairs: 0.
PPI_SEED = "thalamus_R"
PPI_TARGET = "S2_R"
PPI_COUPLING = {"SCS": 0.4, "DRGS": 0.4, "DUAL": 1.0}
PPI_FLUCT_PSC = 0.8  # SD of every ROI's intrinsic BOLD fluctuation, percent


# --------------------------------------------------------------------------------------------- HRF
HRF_PARAMS = {
    "form": "double gamma: gamma.pdf(t, a1, scale=b1) - c * gamma.pdf(t, a2, scale=b2), area-normalised",
    "peak_s": 5.5,
    "undershoot_s": 15.0,
    "scale_s": 0.9,
    "undershoot_ratio": 0.2,
    "subject_latency_sd_s": 0.3,
    "note": "SPM/Glover canonical HRFs peak near 5-6 s with undershoot at 15-16 s and ratio 1/6 (SPM) "
    "or 0.35 (Glover); this HRF differs on purpose.",
}


def hrf(times: np.ndarray, latency: float = 0.0) -> np.ndarray:
    """The simulator's HRF at ``times`` (s), shifted by ``latency`` s; unit area."""
    p = HRF_PARAMS
    b = p["scale_s"]
    a1 = p["peak_s"] / b + 1.0
    a2 = p["undershoot_s"] / b + 1.0
    t = np.asarray(times, dtype=float) - latency
    h = stats.gamma.pdf(t, a1, scale=b) - p["undershoot_ratio"] * stats.gamma.pdf(t, a2, scale=b)
    return h


DT = 0.05  # fine time grid (s) on which time courses are built and then sampled at slice times


def block_onsets(n_volumes: int, tr: float) -> np.ndarray:
    """Onsets (s) of the ON blocks: OFF first, then ON/OFF alternating, ON blocks fully inside the run."""
    total = n_volumes * tr
    onsets = np.arange(BLOCK_S, total - BLOCK_S + 1e-9, 2 * BLOCK_S)
    return onsets


def fine_times(n_volumes: int, tr: float) -> np.ndarray:
    return np.arange(0.0, n_volumes * tr + 2 * tr, DT)


def boxcar(n_volumes: int, tr: float) -> np.ndarray:
    t = fine_times(n_volumes, tr)
    box = np.zeros_like(t)
    for onset in block_onsets(n_volumes, tr):
        box[(t >= onset) & (t < onset + BLOCK_S)] = 1.0
    return box


def convolve(signal: np.ndarray, latency: float) -> np.ndarray:
    """Convolve a fine-grid neural signal with the HRF (area-normalised, so a long block plateaus at 1)."""
    kernel = hrf(np.arange(0.0, 32.0, DT), latency)
    kernel = kernel / kernel.sum()
    return np.convolve(signal, kernel)[: signal.size]


def block_response(n_volumes: int, tr: float, latency: float) -> np.ndarray:
    return convolve(boxcar(n_volumes, tr), latency)


# ---------------------------------------------------------------------------------------- geometry
def rigid_matrix(params: np.ndarray) -> np.ndarray:
    """4x4 rigid matrix from (tx, ty, tz [mm], rx, ry, rz [rad]): ``T @ Rx @ Ry @ Rz`` about the origin."""
    tx, ty, tz, rx, ry, rz = (float(v) for v in params)
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    rot_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    rot_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rot_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    m = np.eye(4)
    m[:3, :3] = rot_x @ rot_y @ rot_z
    m[:3, 3] = (tx, ty, tz)
    return m


def head_offset(rng: np.random.Generator) -> np.ndarray:
    """Subject's head position in the scanner: 2-5 mm shifts and 2-5 degree rotations, random signs."""
    signs = rng.choice([-1.0, 1.0], size=6)
    trans = rng.uniform(2.0, 5.0, size=3)
    rots = np.deg2rad(rng.uniform(2.0, 5.0, size=3))
    return signs * np.concatenate([trans, rots])


def motion_trajectory(rng: np.random.Generator, n_volumes: int) -> tuple[np.ndarray, list[int]]:
    """Head motion (n_volumes, 6): smoothed random walk + slow drift + 2-3 jerks; relative to volume 0."""
    steps = rng.normal(0.0, 1.0, size=(n_volumes, 6)) * np.array([0.03, 0.03, 0.05, 0.0006, 0.0005, 0.0005])
    walk = ndimage.gaussian_filter1d(np.cumsum(steps, axis=0), 2.0, axis=0, mode="nearest")
    drift = np.linspace(0.0, 1.0, n_volumes)[:, None] * rng.normal(0.0, 1.0, 6) * np.array(
        [0.1, 0.15, 0.3, 0.002, 0.001, 0.001]
    )
    motion = walk + drift
    jerks: list[int] = []
    if n_volumes >= 12:
        n_jerks = int(rng.integers(2, 4))
        candidates = np.arange(5, n_volumes - 3)
        jerks = sorted(int(v) for v in rng.choice(candidates, size=min(n_jerks, candidates.size), replace=False))
        for j in jerks:
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            size = rng.uniform(0.5, 1.5)
            jerk = np.concatenate([direction * size, rng.normal(0.0, 1.0, 3) * np.deg2rad(0.4) * size])
            profile = np.zeros(n_volumes)
            profile[j] = 1.0
            profile[j + 1] = 0.35
            profile[j + 2 :] = 0.15  # the head settles close to, not exactly at, where it was
            motion += profile[:, None] * jerk[None, :]
    return motion - motion[0], jerks


def framewise_displacement(motion: np.ndarray, radius: float = 50.0) -> np.ndarray:
    """Power et al. (2012) FD; first value 0."""
    d = np.abs(np.diff(motion, axis=0))
    fd = d[:, :3].sum(axis=1) + radius * d[:, 3:].sum(axis=1)
    return np.concatenate([[0.0], fd])


def slice_timing(n_slices: int, tr: float) -> np.ndarray:
    """Ascending interleaved acquisition (slices 0, 2, 4, ... then 1, 3, 5, ...), times in s."""
    order = np.concatenate([np.arange(0, n_slices, 2), np.arange(1, n_slices, 2)])
    times = np.empty(n_slices)
    times[order] = np.arange(n_slices) * (tr / n_slices)
    return np.round(times, 4)


# ------------------------------------------------------------------------------------------- noise
NOISE = {
    "model": "per-voxel AR(1) noise, sd = sqrt((physio_fraction * S0)^2 + thermal_sd^2), in native space",
    "ar1_rho_range": [0.3, 0.4],
    "physio_fraction": 0.0155,
    "thermal_sd": 12.0,
    "global_signal_sd_percent": 0.35,
    "drift_sd_percent_per_200s": 0.6,
    "spike_drop_range": [0.02, 0.05],
}


def smooth_series(rng: np.random.Generator, n_fine: int, sigma_s: float, sd: float) -> np.ndarray:
    """A smooth zero-mean random time series on the fine grid with the given SD."""
    x = ndimage.gaussian_filter1d(rng.standard_normal(n_fine), sigma_s / DT, mode="wrap")
    x -= x.mean()
    return x * (sd / x.std())


@dataclass
class RunPlan:
    """Everything random about one run, drawn up front so rendering is a pure function of it."""

    subject: str
    session: str
    condition: str
    period: int
    n_volumes: int
    tr: float
    roi_amplitudes: dict[str, float]
    latency: float
    motion: np.ndarray
    jerks: list[int]
    rho: float
    global_signal: np.ndarray  # fine grid, fraction
    drift_coefs: np.ndarray  # (2, 4): [constant, gx, gy, gz] per temporal basis, fraction
    spike_slices: dict[int, tuple[np.ndarray, float]]  # volume -> (slice indices, fractional drop)
    noise_seed: int
    roi_fluct: dict[str, np.ndarray] = field(default_factory=dict)  # ppi: fine-grid fluctuations, percent
    ppi_coupling: float = 0.0

    def roi_timecourses(self) -> np.ndarray:
        """(K, n_fine) percent signal change of every ROI (order of ``ROIS``) on the fine grid."""
        base = block_response(self.n_volumes, self.tr, self.latency)
        out = np.zeros((len(ROIS), base.size))
        for k, roi in enumerate(ROIS):
            out[k] = self.roi_amplitudes[roi.name] * base
            if roi.name in self.roi_fluct:
                out[k] += self.roi_fluct[roi.name]
        return out
