"""BOLD reading: blocks read ahead in a thread equal blocks read in line; errors still reach the caller."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
    assert {"decompress", "smooth"} <= set(timing.totals())
    original = bold._iter_blocks
    monkeypatch.setattr(bold, "_iter_blocks",
                        lambda img, p, s, prefetch=True: original(img, p, s, prefetch=False))
    Y_inline, mask_inline, _ = load_masked_bold(path, mask, 6.0)
    np.testing.assert_array_equal(Y, Y_inline)
    np.testing.assert_array_equal(mask_bool, mask_inline)
    # unsmoothed: exactly the masked data, volume by volume (the per-volume gather)
    Y_raw, _, _ = load_masked_bold(path, mask, None)
    np.testing.assert_array_equal(Y_raw, data[mask_bool].T)


@pytest.mark.parametrize("threads", [1, 2])
def test_only_the_volumes_censoring_keeps_are_smoothed_and_held(tmp_path, monkeypatch, threads):
    path, mask, _ = _write_bold(tmp_path)
    monkeypatch.setattr(bold, "_BLOCK_VOLUMES", 5)
    kept = np.r_[0:3, 5, 9:20, 24, 30:37]  # whole blocks, parts of blocks and a block with none
    Y_all, _, _ = load_masked_bold(path, mask, 6.0)
    Y_kept, _, _ = load_masked_bold(path, mask, 6.0, threads=threads, volumes=kept)
    np.testing.assert_array_equal(Y_kept, Y_all[kept])
    for bad in (kept[::-1], np.r_[0, 0, 1], np.r_[3, 400]):
        with pytest.raises(ValueError, match="increasing indices"):
            load_masked_bold(path, mask, 6.0, threads=threads, volumes=bad)


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


def _smooth_masked(block: np.ndarray, mask: np.ndarray, affine: np.ndarray, fwhm, **plan_options):
    plan = bold.masked_smoothing(mask, bold.smoothing_sigmas(affine, fwhm), **plan_options)
    out = np.full((block.shape[3], int(mask.sum())), np.nan, dtype=np.float32)
    bold.smooth_masked_block(block, plan, out)
    return out


@settings(max_examples=40, deadline=None)
@given(shape=st.tuples(st.integers(1, 40), st.integers(1, 12), st.integers(1, 9)),
       fwhm=st.sampled_from([None, 2.0, 6.0, 15.0]), tile_rows=st.integers(1, 33),
       seed=st.integers(0, 2**16), nan=st.booleans())
def test_masked_smoothing_equals_nilearn_smooth_img_at_the_mask(shape, fwhm, tile_rows, seed, nan):
    """Banded tiles over the mask's box give nilearn's smoothed values at every mask voxel."""
    from nilearn.image import smooth_img

    rng = np.random.default_rng(seed)
    mask = rng.random(shape) < rng.uniform(0.05, 1.0)
    mask.flat[rng.integers(mask.size)] = True
    block = np.asfortranarray(rng.standard_normal(shape + (3,)).astype(np.float32))
    if nan:  # nilearn zeroes non-finite values before smoothing
        block.flat[rng.integers(block.size, size=2)] = [np.nan, np.inf]
    affine = np.diag([3.0, 2.0, 4.0, 1.0])
    ours = _smooth_masked(block, mask, affine, fwhm, tile_rows=tile_rows)
    ref = smooth_img(nib.Nifti1Image(block, affine), fwhm).get_fdata()
    np.testing.assert_allclose(ours, ref[mask].T, rtol=1e-5, atol=1e-5)


def test_a_voxel_constant_over_the_run_stays_exactly_constant():
    """Every volume goes through the same arithmetic: no rounding differs between volumes."""
    rng = np.random.default_rng(4)
    volume = rng.uniform(100, 1000, (61, 47, 33)).astype(np.float32)
    block = np.asfortranarray(np.repeat(volume[..., None], 16, axis=3))
    mask = rng.random(volume.shape) < 0.6
    out = _smooth_masked(block, mask, np.diag([3.0, 3.0, 3.0, 1.0]), 6.0)
    assert np.ptp(out, axis=0).max() == 0


def test_masked_smoothing_skips_the_zero_weights_and_the_rows_outside_the_mask():
    """The arithmetic saved is real: products cover the mask's box and the filter's band only."""
    mask = np.zeros((64, 64, 40), dtype=bool)
    mask[10:50, 5:60, 3:30] = True
    plan = bold.masked_smoothing(mask, bold.smoothing_sigmas(np.diag([3.0, 3.0, 3.0, 1.0]), 6.0))
    x_tiles = plan.tiles[0]
    assert [(a, b) for a, b, *_ in x_tiles] == [(0, 32), (32, 40)]  # rows 10..49 of x
    # sigma 0.85 voxels: nilearn's filter reaches 3 voxels, so rows 10..41 read 7..44
    assert [(lo, hi) for _, _, lo, hi, _ in x_tiles] == [(7, 45), (39, 53)]
    assert plan.index.size == mask.sum() and plan.index.max() == 27 * 55 * 40 - 1