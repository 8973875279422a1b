"""inspect_image's full check of a gzipped NIfTI, through ISA-L and through zlib alike."""
from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from fmri_pain.bids import readers
from fmri_pain.bids.readers import Problem, inspect_image


@pytest.fixture(params=["isal", "zlib"])
def inflater(request, monkeypatch):
    if request.param == "isal" and readers.igzip is None:
        pytest.skip("isal not installed")
    if request.param == "zlib":
        monkeypatch.setattr(readers, "igzip", None)
    return request.param


@pytest.fixture
def bold(tmp_path):
    data = np.random.default_rng(0).standard_normal((6, 7, 5, 30)).astype(np.float32)
    data[2, 3, 1, 4] = np.nan
    data[0, 0, 0, 17] = np.inf
    path = tmp_path / "bold.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


def test_a_sound_image_is_streamed_and_its_non_finite_volumes_counted(bold, inflater):
    info = inspect_image(bold)
    assert info.shape == (6, 7, 5, 30)
    assert info.nonfinite_volumes == (4, 17) and info.n_nonfinite == 2


def test_a_wrong_crc_is_a_problem(bold, inflater):
    raw = bytearray(bold.read_bytes())
    raw[-8] ^= 0xFF  # the trailer's CRC-32
    bold.write_bytes(bytes(raw))
    with pytest.raises(Problem, match="corrupt"):
        inspect_image(bold)


def test_a_flipped_data_byte_is_a_problem(bold, inflater):
    raw = gzip.decompress(bold.read_bytes())
    body = bytearray(gzip.compress(raw, compresslevel=0))  # stored blocks: the byte is data
    body[len(body) // 2] ^= 0x01
    bold.write_bytes(bytes(body))
    with pytest.raises(Problem, match="corrupt"):
        inspect_image(bold)


def test_a_truncated_stream_is_a_problem(bold, inflater):
    raw = bold.read_bytes()
    bold.write_bytes(raw[: len(raw) * 2 // 3])
    with pytest.raises(Problem, match="truncated"):
        inspect_image(bold)
