"""Report figures: sequential colours for positive-only maps, diverging for signed ones, compressed
PNGs, and a viewer document that needs no network."""

from __future__ import annotations

import base64
import io

import nibabel as nib
import numpy as np
import pandas as pd
from PIL import Image

from fmri_pain.report.figures import (design_matrix_uri, glass_brain_uri, is_signed, png_bytes,
                                      viewer_document)


def _image(uri: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB"),
                      dtype=int)


def _blue_pixels(rgb: np.ndarray) -> int:
    """Pixels of cold_hot's negative half (blue well above red and green)."""
    return int(((rgb[..., 2] > 150) & (rgb[..., 0] < 80) & (rgb[..., 1] < 200)).sum())


def _map(signed: bool) -> nib.Nifti1Image:
    data = np.zeros((20, 24, 20), dtype=np.float32)
    data[5:9, 5:9, 5:9] = 6.0
    if signed:
        data[12:16, 14:18, 10:14] = -6.0
    return nib.Nifti1Image(data, np.diag([4.0, 4.0, 4.0, 1.0]) @ np.array(
        [[1, 0, 0, -10], [0, 1, 0, -14], [0, 0, 1, -8], [0, 0, 0, 1]], dtype=float))


def test_colour_maps_follow_the_sign_of_the_statistic():
    assert is_signed(np.array([-1.0, 2.0])) and not is_signed(np.array([0.0, 2.0]))
    assert not is_signed(np.array([-1.0, 2.0]), two_sided=False)
    positive = _image(glass_brain_uri(_map(signed=False), "F", 3.0, two_sided=True))
    signed = _image(glass_brain_uri(_map(signed=True), "t", 3.0, two_sided=True))
    assert _blue_pixels(positive) == 0  # sequential (inferno): no blue half in map or colour bar
    assert _blue_pixels(signed) > 50  # diverging: the negative cluster and half the colour bar


def test_png_bytes_is_a_smaller_faithful_palette_png():
    rgb = np.full((200, 300, 3), 255, dtype=np.uint8)
    rgb[50:150, 50:250] = (220, 40, 10)
    original = io.BytesIO()
    Image.fromarray(rgb).convert("RGBA").save(original, format="PNG")
    packed = png_bytes(Image.open(original))
    decoded = np.asarray(Image.open(io.BytesIO(packed)).convert("RGB"))
    assert np.array_equal(decoded, rgb) and len(packed) < len(original.getvalue())


def test_design_matrix_smaller_than_a_map():
    design = pd.DataFrame(np.random.default_rng(0).normal(size=(40, 6)),
                          columns=[f"c{i}" for i in range(6)])
    assert _image(design_matrix_uri(design)).shape[0] < _image(glass_brain_uri(_map(True), "t")).shape[0]


def test_viewer_document_is_offline():
    document, width, height = viewer_document(_map(signed=True), "t map", 3.0)
    assert "brainsprite" in document and "jQuery" in document
    assert "http://" not in document and "https://" not in document  # favicon link removed
    assert width > 0 and height > 0
