"""Permutation inference on any set of maps, as FSL ``randomise`` does (``fmri-pain permute``).

The maps are rows of a design given as a TSV (one row per map, numeric
columns are regressors, an optional column names the exchangeability blocks);
without a design the test is one-sample. Outputs follow the group contract
(``OUT/group/..._contrast-<name>_desc-perm_stat-logp_statmap.nii.gz`` ...).

The ``space-`` entity of the outputs is the template the maps are in: the
``space-`` entity of the input maps' file names when they all carry the same
one, else ``--space LABEL``; with neither, the outputs carry no ``space-``
entity (the template is unknown) and the sidecars say so (``Space: null``).
"""
from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from fmri_pain.bids.derivatives import provenance, statmap_path, write_nifti
from fmri_pain.bids.nifti import masked_maps
from fmri_pain.errors import InputError
from fmri_pain.glm.inference.maps import permutation_maps, write_permutation_maps
from fmri_pain.glm.inference.permutation import ZeroVarianceError, permutation_test
from fmri_pain.glm.inference.resources import ResourceError
from fmri_pain.glm.inference.result import PermutationResult

__all__ = ["read_design", "parse_contrast", "resolve_space", "check_grid", "permute_maps"]

LOGGER = logging.getLogger(__name__)
_SPACE = re.compile(r"(?:^|_)space-([^_.]+)(?:_|\.|$)")


def read_design(path: Path | str | None, n_maps: int, blocks: str | None = None
                ) -> tuple[pd.DataFrame, np.ndarray | None]:
    """Design matrix (numeric columns) and block labels from a TSV with one row per map.

    Without a file: a one-sample design (column ``intercept``).
    """
    if path is None:
        if blocks is not None:
            raise InputError("--blocks names a column of --design, and no design was given")
        return pd.DataFrame({"intercept": np.ones(n_maps)}), None
    try:
        table = pd.read_csv(path, sep="\t")
    except Exception as exc:  # pandas raises many types for unreadable tables
        raise InputError(f"cannot read the design table: {exc}", path=path) from exc
    if len(table) != n_maps:
        raise InputError(f"the design has {len(table)} rows but {n_maps} maps were given", path=path)
    labels = None
    if blocks is not None:
        if blocks not in table:
            raise InputError(f"no column {blocks!r} for the blocks (columns: {list(table)})", path=path)
        labels = table.pop(blocks).astype(str).to_numpy()
    bad = [c for c in table if not pd.api.types.is_numeric_dtype(table[c]) or table[c].isna().any()]
    if bad:
        raise InputError(f"design columns must be numbers without n/a: {bad}", path=path)
    if table.shape[1] == 0:
        raise InputError("the design has no regressor column", path=path)
    return table.astype(float), labels


def parse_contrast(text: str | None, columns: Sequence[str]) -> tuple[np.ndarray, str]:
    """Weights and a name from a column name, or comma-separated weights (rows split by ``;``).

    Without text, the design must have a single column, which is tested.
    """
    columns = list(columns)
    if text is None:
        if len(columns) != 1:
            raise InputError(f"give --contrast: the design has columns {columns}")
        text = columns[0]
    if text in columns:
        return np.eye(len(columns))[columns.index(text)], text
    try:
        rows = [[float(w) for w in row.split(",")] for row in text.split(";")]
    except ValueError:
        raise InputError(f"--contrast {text!r} is neither a design column {columns} "
                         "nor comma-separated weights") from None
    if any(len(row) != len(columns) for row in rows):
        raise InputError(f"--contrast {text!r} needs {len(columns)} weights per row ({columns})")
    weights = np.asarray(rows)
    return (weights[0] if len(rows) == 1 else weights), "contrast"


def resolve_space(maps: Sequence[Path | str], space: str | None = None
                  ) -> tuple[str | None, str, list[str]]:
    """The template label of the outputs, where it came from, and warnings.

    ``space`` (``--space``) must be a BIDS label (letters and digits); it wins
    over the maps' names, with a warning when they name another space.
    Without it, the maps' common ``space-`` entity is kept; maps without one,
    or naming different spaces, give no label.
    """
    found = {str(Path(m)): (_SPACE.search(Path(m).name) or [None, None])[1] for m in maps}
    notes = []
    odd = sorted({v for v in found.values() if v is not None and not v.isalnum()})
    if odd:
        notes.append(f"space- labels that are not BIDS labels were ignored: {', '.join(odd)[:200]}")
        found = {k: (v if v is None or v.isalnum() else None) for k, v in found.items()}
    labels = sorted({v for v in found.values() if v is not None})
    if space is not None:
        if not re.fullmatch(r"[A-Za-z0-9]+", space):
            raise InputError(f"--space {space[:60]!r} is not a BIDS label (letters and digits only)")
        if labels and labels != [space]:
            notes.append(f"the maps' names say space-{', space-'.join(labels)} but --space "
                         f"{space} was given: the outputs are named space-{space}")
        return space, "--space", notes
    if len(labels) == 1 and None not in found.values():
        return labels[0], "the space- entity of every input map", notes
    if labels:
        notes.append("the input maps name different spaces or some name none "
                     f"({', '.join(labels)}): the outputs carry no space- entity")
    return None, ("unknown: the input maps' names carry no common space- entity and --space "
                  "was not given"), notes


def _affine_text(affine: np.ndarray) -> str:
    rows = np.round(np.asarray(affine, dtype=float)[:3], 4) + 0.0  # no -0
    return "[" + "; ".join(" ".join(f"{v:g}" for v in row) for row in rows) + "]"


def check_grid(maps: Sequence[Path], mask_path: Path, mask_img: nib.Nifti1Image) -> None:
    """Every map on the mask's grid, from the headers only (nothing is read or written).

    Raises :class:`InputError` naming the map, with both shapes or both affines.
    """
    shape, affine = mask_img.shape[:3], mask_img.affine
    for path in maps:
        try:
            img = nib.load(path)
        except Exception as exc:  # nibabel raises many types for bad files
            raise InputError(f"cannot read the map: {exc}", path=path) from exc
        map_shape = img.shape[:3] if len(img.shape) == 3 or (len(img.shape) == 4 and img.shape[3] == 1) \
            else img.shape
        if tuple(map_shape) != tuple(shape):
            raise InputError(f"shape {tuple(img.shape)} differs from the mask's {tuple(shape)} "
                             f"({mask_path.name}); resample the map to the mask's grid", path=path)
        if not np.allclose(img.affine, affine, atol=1e-3):
            raise InputError(f"affine {_affine_text(img.affine)} differs from the mask's "
                             f"{_affine_text(affine)} ({mask_path.name}), shape {tuple(shape)} "
                             "both; resample the map to the mask's grid", path=path)


def permute_maps(maps: Sequence[Path | str], mask: Path | str, output_dir: Path | str, *,
                 design: Path | str | None = None, contrast: str | None = None,
                 blocks: str | None = None, name: str | None = None, n_perm: int = 5000,
                 two_sided: bool = False, tfce: bool = False,
                 cluster_threshold: float | None = None, seed: int | None = 0,
                 n_jobs: int = 1, alpha: float = 0.05, space: str | None = None,
                 accel: str = "none") -> tuple[PermutationResult, dict[str, Path]]:
    """Test one contrast on maps by permutation and write the maps.

    Returns the result and the written paths (keys of
    :data:`fmri_pain.glm.inference.maps.MAP_ENTITIES`, the statistic ``t`` or
    ``F`` as the group level names it, and ``z``). ``space``: the template
    label of the outputs (see :func:`resolve_space`). Bad input (a missing or
    unreadable file, an empty mask, maps off the mask's grid, maps without
    variance, a stage larger than the machine's memory) raises
    :class:`~fmri_pain.errors.InputError` naming the file, before anything
    is written.
    """
    maps = [Path(m) for m in maps]
    mask = Path(mask)
    for path in [*maps, mask] + ([Path(design)] if design else []):
        if not path.is_file():
            raise InputError("file not found", path=path)
    try:
        mask_img = nib.load(mask)
        mask_data = np.asanyarray(mask_img.dataobj)
    except Exception as exc:
        raise InputError(f"cannot read the mask: {exc}", path=mask) from exc
    if mask_data.ndim != 3:
        raise InputError(f"the mask must be a 3-D image, got shape {mask_data.shape}", path=mask)
    n_vox = int(np.count_nonzero(np.nan_to_num(mask_data)))
    if n_vox == 0:
        raise InputError("the mask has no non-zero voxel: nothing to test", path=mask)
    mask_bool = np.nan_to_num(mask_data) != 0
    mask_img = nib.Nifti1Image(mask_bool.astype(np.uint8), mask_img.affine)
    space, space_source, notes = resolve_space(maps, space)
    for note in notes:
        LOGGER.warning(note)
    table, labels = read_design(design, len(maps), blocks)
    weights, default_name = parse_contrast(contrast, table.columns)
    name = name or default_name
    if not name.isalnum():
        raise InputError(f"contrast name {name!r} must be alphanumeric (a BIDS entity)")
    check_grid(maps, mask, mask_img)
    try:
        Y = masked_maps(maps, mask_img)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    bad = np.flatnonzero(~np.isfinite(Y).all(axis=1))
    if bad.size:
        raise InputError(f"{int((~np.isfinite(Y[bad[0]])).sum())} voxels inside the mask are NaN "
                         "or infinite; shrink the mask or fill them", path=maps[bad[0]])
    try:
        result = permutation_test(
            Y, table.to_numpy(), weights, mask=mask_bool, n_perm=n_perm, blocks=labels,
            two_sided=two_sided, tfce=tfce, cluster_threshold=cluster_threshold,
            random_state=seed, n_jobs=n_jobs, accel=accel)
    except ResourceError as exc:
        raise InputError(f"--n-perm {n_perm}: {exc}") from None
    except ZeroVarianceError as exc:
        raise InputError(f"{exc} ({len(maps)} maps {maps[0].name} ... {maps[-1].name})",
                         path=mask) from None
    except ValueError as exc:  # inestimable contrast, no residual df ...
        raise InputError(str(exc)) from exc
    result.warnings.extend(notes)
    images = permutation_maps(result, mask_img, alpha=alpha)
    sidecar = provenance([*maps, mask] + ([Path(design)] if design else []),
                         {"design_columns": list(table.columns),
                          "contrast": np.asarray(weights).tolist(), "blocks": blocks},
                         Space=space, SpaceSource=space_source)
    written = write_permutation_maps(result, mask_img, output_dir, contrast=name, alpha=alpha,
                                     sidecar=sidecar, images=images, space=space)
    for stat, key in ((result.stat_type, "stat"), ("z", "z")):
        written[stat] = write_nifti(images[key], statmap_path(output_dir, contrast=name, stat=stat,
                                                              space=space),
                                    sidecar={**sidecar, **result.sidecar_fields()})
    return result, written
