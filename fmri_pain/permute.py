"""Permutation inference on any set of maps, as FSL ``randomise`` does (``fmri-pain permute``).

The maps are rows of a design given as a TSV (one row per map, numeric
columns are regressors, an optional column names the exchangeability blocks);
without a design the test is one-sample. Outputs follow the group contract
(``OUT/group/..._contrast-<name>_desc-perm_stat-logp_statmap.nii.gz`` ...).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from fmri_pain.derivatives import provenance, statmap_path, write_nifti
from fmri_pain.errors import InputError
from fmri_pain.glm.inference import (
    PermutationResult,
    permutation_inference,
    write_permutation_maps,
)

__all__ = ["read_design", "parse_contrast", "permute_maps"]


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


def permute_maps(maps: Sequence[Path | str], mask: Path | str, output_dir: Path | str, *,
                 design: Path | str | None = None, contrast: str | None = None,
                 blocks: str | None = None, name: str | None = None, n_perm: int = 5000,
                 two_sided: bool = False, tfce: bool = False,
                 cluster_threshold: float | None = None, seed: int | None = 0,
                 n_jobs: int = 1, alpha: float = 0.05) -> tuple[PermutationResult, dict[str, Path]]:
    """Test one contrast on maps by permutation and write the maps.

    Returns the result and the written paths (keys of
    :data:`fmri_pain.glm.inference.MAP_ENTITIES`, the statistic ``t`` or
    ``F`` as the group level names it, and ``z``). Bad input raises
    :class:`~fmri_pain.errors.InputError` naming the file.
    """
    maps = [Path(m) for m in maps]
    for path in [*maps, Path(mask)] + ([Path(design)] if design else []):
        if not path.is_file():
            raise InputError("file not found", path=path)
    try:
        mask_img = nib.load(mask)
        np.asanyarray(mask_img.dataobj)
    except Exception as exc:
        raise InputError(f"cannot read the mask: {exc}", path=mask) from exc
    table, labels = read_design(design, len(maps), blocks)
    weights, default_name = parse_contrast(contrast, table.columns)
    name = name or default_name
    if not name.isalnum():
        raise InputError(f"contrast name {name!r} must be alphanumeric (a BIDS entity)")
    try:
        result, images = permutation_inference(
            maps, table.to_numpy(), weights, mask_img, alpha=alpha, n_perm=n_perm,
            blocks=labels, two_sided=two_sided, tfce=tfce, cluster_threshold=cluster_threshold,
            random_state=seed, n_jobs=n_jobs)
    except InputError:
        raise
    except ValueError as exc:  # misaligned or unreadable map, inestimable contrast ...
        raise InputError(str(exc)) from exc
    sidecar = provenance([*maps, Path(mask)] + ([Path(design)] if design else []),
                         {"design_columns": list(table.columns),
                          "contrast": np.asarray(weights).tolist(), "blocks": blocks})
    written = write_permutation_maps(result, mask_img, output_dir, contrast=name, alpha=alpha,
                                     sidecar=sidecar, images=images)
    for stat, key in ((result.stat_type, "stat"), ("z", "z")):
        written[stat] = write_nifti(images[key], statmap_path(output_dir, contrast=name, stat=stat),
                                    sidecar=sidecar)
    return result, written
