"""Image registration with antspyx, returned as world-space (RAS+) pull transforms.

ANTs works in LPS+ coordinates and stores affine transforms as
``y = A (x - c) + c + t``; :func:`ants_affine_to_ras` turns that into the 4x4
RAS+ matrix used everywhere else (see :mod:`.transforms`).  The forward
transforms of ``ants.registration(fixed, moving)`` map *fixed* points to
*moving* points, i.e. they are pull transforms from fixed to moving space.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fmri_pain.preprocess.transforms import apply_affine

# ITK sums the metric over threads in a schedule-dependent order, so two runs with more than one
# thread differ (measured: translations 0.02 mm apart, maps z up to 2 apart downstream).  ITK reads
# this variable once, at its first use in a process, so it is set here, at import, before this
# module (the only one that imports antspyx) can make any ITK call; nipype's MultiProc workers
# import this module (and inherit the environment) before they register anything.
os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = "1"

_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
ANTS_TYPES = {"rigid": "Rigid", "affine": "Affine", "syn": "SyN"}


@dataclass
class Registration:
    """Result of :func:`register`: the pull mapping fixed-space points -> moving-space points.

    ``matrix`` is the affine part (4x4, RAS+).  For SyN, ``transforms`` keeps
    the ANTs files (warp first, then affine) needed by :func:`map_points`.
    """

    matrix: np.ndarray
    kind: str
    transforms: list[str] = field(default_factory=list)

    @property
    def is_linear(self) -> bool:
        return self.kind != "syn"


def to_ants(data: np.ndarray, affine: np.ndarray):
    """numpy volume + RAS affine -> ANTsImage (LPS header)."""
    import ants

    lps = _LPS @ np.asarray(affine, dtype=float)
    spacing = np.sqrt((lps[:3, :3] ** 2).sum(axis=0))
    direction = lps[:3, :3] / spacing
    return ants.from_numpy(
        np.asarray(data, dtype=np.float32),
        origin=lps[:3, 3].tolist(),
        spacing=spacing.tolist(),
        direction=direction,
    )


def ants_affine_to_ras(path: str | Path) -> np.ndarray:
    """Read an ANTs/ITK affine (.mat) as a 4x4 RAS+ matrix (same direction as the file)."""
    import ants

    tx = ants.read_transform(str(path))
    params = np.asarray(tx.parameters, dtype=float)
    center = np.asarray(tx.fixed_parameters, dtype=float)
    a = params[:9].reshape(3, 3)
    t = params[9:12]
    lps = np.eye(4)
    lps[:3, :3] = a
    lps[:3, 3] = t + center - a @ center
    return _LPS @ lps @ _LPS


@contextlib.contextmanager
def _ants_seed(seed: int):
    """Seed ANTs' metric sampling for one call.

    antspyx 0.6.3 ignores a ``random_seed`` keyword of ``ants.registration`` (it lands in
    ``**kwargs``): the ``--random-seed`` option is built from ``ants.config._random_seed``,
    which ``ants.set_ants_deterministic`` would set together with the global numpy and
    ``random`` seeds of the whole process.  Only the ANTs seed is set here, and restored.
    """
    import ants.config

    old = ants.config._random_seed
    ants.config._random_seed = int(seed)
    try:
        yield
    finally:
        ants.config._random_seed = old


def register(
    fixed: np.ndarray,
    fixed_affine: np.ndarray,
    moving: np.ndarray,
    moving_affine: np.ndarray,
    kind: str = "affine",
    fixed_mask: np.ndarray | None = None,
    keep_dir: str | Path | None = None,
    seed: int = 1,
) -> Registration:
    """Register ``moving`` to ``fixed`` with antspyx (mutual information).

    Parameters
    ----------
    fixed, moving : 3D arrays with their RAS affines.
    kind : {"rigid", "affine", "syn"}
    fixed_mask : optional 3D bool array on the fixed grid restricting the metric.
    keep_dir : folder where SyN transform files are kept (required for ``syn``).
    seed : random seed of ANTs' metric sampling; with ITK on one thread (set at import of this
        module) the result is bit-identical from run to run.
    """
    import ants

    if kind not in ANTS_TYPES:
        raise ValueError(f"registration kind must be one of {sorted(ANTS_TYPES)}, got {kind!r}")
    if kind == "syn" and keep_dir is None:
        raise ValueError("SyN registration needs keep_dir to store its warp field")
    f_img = to_ants(fixed, fixed_affine)
    m_img = to_ants(moving, moving_affine)
    mask = None if fixed_mask is None else to_ants(fixed_mask.astype(np.float32), fixed_affine)
    tmp = Path(tempfile.mkdtemp(prefix="fmripain_ants_"))
    try:
        with _ants_seed(seed):
            reg = ants.registration(
                fixed=f_img,
                moving=m_img,
                type_of_transform=ANTS_TYPES[kind],
                mask=mask,
                outprefix=str(tmp / "reg_"),
                aff_random_sampling_rate=0.2,
            )
        fwd = list(reg["fwdtransforms"])
        mats = [p for p in fwd if p.endswith(".mat")]
        if len(mats) != 1:
            raise RuntimeError(f"unexpected ANTs transforms {fwd}")
        matrix = ants_affine_to_ras(mats[0])
        kept: list[str] = []
        if kind == "syn":
            keep = Path(keep_dir)
            keep.mkdir(parents=True, exist_ok=True)
            for p in fwd:
                dest = keep / Path(p).name
                shutil.copyfile(p, dest)
                kept.append(str(dest))
        return Registration(matrix=matrix, kind=kind, transforms=kept)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def map_points(reg: Registration, points: np.ndarray) -> np.ndarray:
    """Map fixed-space points ``(..., 3)`` (RAS mm) to moving space through ``reg``."""
    points = np.asarray(points, dtype=float)
    if reg.is_linear:
        return apply_affine(reg.matrix, points)
    import ants
    import pandas as pd

    flat = points.reshape(-1, 3)
    lps = flat * np.array([-1.0, -1.0, 1.0])
    df = pd.DataFrame(lps, columns=["x", "y", "z"])
    out = ants.apply_transforms_to_points(3, df, reg.transforms).to_numpy()[:, :3]
    return (out * np.array([-1.0, -1.0, 1.0])).reshape(points.shape)
