"""BOLD reading: blocks read ahead in a thread equal blocks read in line; errors still reach the caller."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fmri_pain.errors import InputError
from fmri_pain.glm.first_level import bold, timing
from fmri_pain.glm.first_level.bold import load_masked_bold


def _write_bold(folder: Path, n: int = 37) -> tuple[Path, Path, np.ndarray]:
    rng = np.random.default_rng(3)
    data = (500 + 10 * rng.standard_normal((9, 8, 7, n))).astype(np.float32)
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    mask = np.zeros((9, 8, 7), dtype=np.uint8)
    mask[1:-1, 2:-1, 1:-2] = 1
    nib.Nifti1Image(data, affine).to_filename(folder / "bold.nii.gz")
    nib.Nifti1Image(mask, affine).to_filename(folder / "mask.nii.gz")
    return folder / "bold.nii.gz", folder / "mask.nii.gz", data


def test_read_ahead_equals_in_line_reading(tmp_path, monkeypatch):
    path, mask, data = _write_bold(tmp_path)
    monkeypatch.setattr(bold, "_BLOCK_VOLUMES", 5)  # 37 volumes: 7 full blocks and a short one
    timing.reset()
    Y, mask_bool, _ = load_masked_bold(path, mask, 6.0)
    assert {"decompress", "smooth", "mask"} <= set(timing.totals())
    original = bold._iter_blocks
    monkeypatch.setattr(bold, "_iter_blocks",
                        lambda img, p, s, prefetch=True: original(img, p, s, prefetch=False))
    Y_inline, mask_inline, _ = load_masked_bold(path, mask, 6.0)
    np.testing.assert_array_equal(Y, Y_inline)
    np.testing.assert_array_equal(mask_bool, mask_inline)
    # unsmoothed: exactly the masked data, volume by volume (the per-volume gather)
    Y_raw, _, _ = load_masked_bold(path, mask, None)
    np.testing.assert_array_equal(Y_raw, data[mask_bool].T)


def test_read_ahead_error_reaches_the_caller(tmp_path, monkeypatch):
    path, mask, _ = _write_bold(tmp_path)
    raw = gzip.decompress(path.read_bytes())
    truncated = tmp_path / "short.nii.gz"
    truncated.write_bytes(gzip.compress(raw[: len(raw) * 2 // 3]))
    monkeypatch.setattr(bold, "_BLOCK_VOLUMES", 4)
    with pytest.raises(InputError, match="cannot read BOLD data"):
        load_masked_bold(truncated, mask, 6.0)


def test_consumer_stopping_early_stops_the_reader(tmp_path, monkeypatch):
    path, _, _ = _write_bold(tmp_path)
    monkeypatch.setattr(bold, "_BLOCK_VOLUMES", 2)
    img = nib.load(str(path))
    blocks = bold._iter_blocks(img, path, None)
    start, first = next(blocks)
    assert start == 0 and first.shape[3] == 2
    blocks.close()  # joins the reader thread; must not hang on the full queue


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gather_rows_equals_numpy_take(dtype):
    rng = np.random.default_rng(0)
    src = rng.standard_normal((5, 1000)).astype(dtype)
    index = rng.choice(1000, 317, replace=False).astype(np.int64)
    out = np.empty((5, 317), dtype=dtype)
    bold.gather_rows(src, index, out)
    np.testing.assert_array_equal(out, np.take(src, index, axis=1))
