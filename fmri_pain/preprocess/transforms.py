"""Rigid-body matrices and coordinate helpers (pure numpy).

Convention used throughout :mod:`fmri_pain.preprocess`: every transform is a
*pull* mapping in world (RAS+, mm) coordinates.  A matrix ``M`` that registers
image B to image A maps a point of A's space to the corresponding point of B's
space, so resampling B onto A's grid means evaluating B at ``M @ x``.  For head
motion, ``M_t`` maps the reference position to the position of the same tissue
in volume ``t``: it *is* the head displacement.

Motion parameters are ``(trans_x, trans_y, trans_z, rot_x, rot_y, rot_z)`` in mm
and radians, with ``M = T(t) C R C^-1``, ``R = Rx @ Ry @ Rz`` and ``C`` the
translation to the rotation centre (the centre of the reference field of view).
"""
from __future__ import annotations

import numpy as np


def rotation_matrix(rx: float, ry: float, rz: float) -> np.ndarray:
    """3x3 rotation ``Rx(rx) @ Ry(ry) @ Rz(rz)`` (radians)."""
    cx, sx = np.cos(rx), np.sin(rx)
    cy, sy = np.cos(ry), np.sin(ry)
    cz, sz = np.cos(rz), np.sin(rz)
    rot_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    rot_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rot_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rot_x @ rot_y @ rot_z


def rigid_matrix(params: np.ndarray, center: np.ndarray | None = None) -> np.ndarray:
    """4x4 matrix from ``(tx, ty, tz, rx, ry, rz)`` rotating about ``center`` (mm)."""
    params = np.asarray(params, dtype=float)
    center = np.zeros(3) if center is None else np.asarray(center, dtype=float)
    mat = np.eye(4)
    rot = rotation_matrix(*params[3:6])
    mat[:3, :3] = rot
    mat[:3, 3] = params[:3] + center - rot @ center
    return mat


def rigid_params(matrix: np.ndarray, center: np.ndarray | None = None) -> np.ndarray:
    """Inverse of :func:`rigid_matrix` for a (near-)rigid 4x4 matrix."""
    center = np.zeros(3) if center is None else np.asarray(center, dtype=float)
    rot = np.asarray(matrix)[:3, :3]
    # R = Rx Ry Rz  ->  R[0,2] = sin(ry), R[0,1] = -cos(ry) sin(rz), R[1,2] = -sin(rx) cos(ry)
    ry = np.arcsin(np.clip(rot[0, 2], -1.0, 1.0))
    rz = np.arctan2(-rot[0, 1], rot[0, 0])
    rx = np.arctan2(-rot[1, 2], rot[2, 2])
    trans = np.asarray(matrix)[:3, 3] - center + rot @ center
    return np.concatenate([trans, [rx, ry, rz]])


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 matrix to an ``(..., 3)`` array of points."""
    points = np.asarray(points, dtype=float)
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def volume_center(shape: tuple, affine: np.ndarray) -> np.ndarray:
    """World coordinates of the centre of a voxel grid."""
    return apply_affine(affine, (np.asarray(shape[:3], dtype=float) - 1.0) / 2.0)


def grid_points(shape: tuple, affine: np.ndarray) -> np.ndarray:
    """World coordinates of every voxel of a grid, shape ``(nx, ny, nz, 3)``."""
    ijk = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in shape[:3]], indexing="ij"), axis=-1)
    return apply_affine(affine, ijk)
