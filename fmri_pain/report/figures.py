"""Figures for the reports, rendered to embedded (palette-compressed) PNG data URIs."""

from __future__ import annotations

import base64
import io
import re
import warnings
from functools import lru_cache
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from nilearn import plotting  # noqa: E402
from PIL import Image  # noqa: E402

DPI = 80
"""Resolution of the report figures (screen, not print)."""
SEQUENTIAL_CMAP = "inferno"
"""Colour map of statistics that are never negative (F, -log10 p, TFCE, one-sided z)."""
DIVERGING_CMAP = "cold_hot"
"""Colour map of signed statistics (t, z of two-sided tests)."""


def png_bytes(image: Image.Image, colors: int = 128) -> bytes:
    """``image`` as an optimised palette PNG (``colors`` colours, no dithering).

    Report figures are flat colours on white: an adaptive palette keeps them
    visually identical at a fraction of the size of 24-bit PNG.
    """
    rgb = image.convert("RGB")
    palette = rgb.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def figure_to_uri(fig, dpi: int = DPI) -> str:
    """A matplotlib figure as a compressed ``data:image/png;base64`` URI; closes the figure."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    buffer.seek(0)
    return _uri(png_bytes(Image.open(buffer)))


def file_to_uri(path: Path | str, max_width: int | None = None) -> str:
    """A PNG file as a compressed data URI, scaled down to ``max_width`` pixels if wider."""
    image = Image.open(Path(path))
    if max_width is not None and image.width > max_width:
        height = max(1, round(image.height * max_width / image.width))
        image = image.convert("RGB").resize((max_width, height), Image.Resampling.LANCZOS)
    return _uri(png_bytes(image))


def is_signed(data: np.ndarray, two_sided: bool = True) -> bool:
    """Whether a map needs a diverging colour map: a two-sided statistic with negative values."""
    finite = data[np.isfinite(data)]
    return bool(two_sided and finite.size and finite.min() < 0)


def glass_brain_uri(img: nib.Nifti1Image | str | Path, title: str,
                    threshold: float | None = None, two_sided: bool = True) -> str:
    """Glass-brain view of a statistical map.

    Signed two-sided maps get the diverging :data:`DIVERGING_CMAP` with a
    symmetric colour bar; maps without negative values (F, -log10 p, TFCE, and
    one-sided tests, shown as their absolute value) the sequential
    :data:`SEQUENTIAL_CMAP` from 0.
    """
    img = nib.load(img) if not isinstance(img, nib.Nifti1Image) else img
    data = np.nan_to_num(np.asanyarray(img.dataobj, dtype=float))
    signed = is_signed(data, two_sided)
    if not signed:
        data = np.abs(data)
    vmax = float(np.abs(data).max()) or 1.0
    fig = plt.figure(figsize=(7, 2.6))
    if threshold is None or not np.isfinite(threshold):
        threshold = 3.1 if vmax > 3.1 else vmax / 2
    kwargs = ({"cmap": DIVERGING_CMAP, "plot_abs": False, "symmetric_cbar": True} if signed else
              {"cmap": SEQUENTIAL_CMAP, "plot_abs": False, "symmetric_cbar": False, "vmin": 0.0})
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="empty mask")  # nothing survives: an empty brain
        display = plotting.plot_glass_brain(nib.Nifti1Image(data, img.affine), threshold=threshold,
                                            colorbar=True, vmax=vmax, title=title, figure=fig,
                                            **kwargs)
    _tidy_colorbar(display)
    return figure_to_uri(fig)


def _tidy_colorbar(display) -> None:
    """At most 5 colour-bar ticks of 2 significant digits, so that their labels never overlap."""
    cbar = getattr(display, "_cbar", None)
    if cbar is None:
        return
    cbar.locator = MaxNLocator(nbins=4)
    cbar.formatter = matplotlib.ticker.FormatStrFormatter("%.2g")
    cbar.update_ticks()
    cbar.ax.tick_params(labelsize=8)


def design_matrix_uri(design) -> str:
    """nilearn's design-matrix plot of a DataFrame, drawn smaller than the maps."""
    fig, ax = plt.subplots(figsize=(min(1.5 + 0.22 * design.shape[1], 6), 2.6))
    plotting.plot_design_matrix(design, axes=ax)
    ax.tick_params(labelsize=7)
    return figure_to_uri(fig, dpi=60)


VIEWER_BACKGROUND_MM = 3
"""Resolution of the viewer's MNI152 background (the group maps are coarser; 2 mm doubles the page)."""
_FAVICON = re.compile(r'<link\s+rel="icon"[^>]*>')  # nilearn's, fetched from GitHub: not offline
_SPRITE = re.compile(r'(<img id="spriteImg-[^"]*"\s+class="hidden"\s+src=")data:image/png;base64,([^"]+)"')


@lru_cache(maxsize=1)
def _viewer_background() -> nib.Nifti1Image:
    from nilearn.datasets import load_mni152_template  # shipped with nilearn: no download

    return load_mni152_template(resolution=VIEWER_BACKGROUND_MM)


def _compress_background(document: str) -> str:
    """The viewer's (opaque, grey) background sprite re-encoded as a palette PNG."""
    def encode(match: re.Match) -> str:
        image = Image.open(io.BytesIO(base64.b64decode(match.group(2))))
        return f'{match.group(1)}{_uri(png_bytes(image, colors=96))}"'

    return _SPRITE.sub(encode, document, count=1)


def viewer_document(img: nib.Nifti1Image | str | Path, title: str, threshold: float,
                    two_sided: bool = True) -> tuple[str, int, int]:
    """nilearn's interactive slice viewer of a map as one self-contained HTML document.

    The document inlines nilearn's own jQuery and brainsprite scripts and the
    images as data URIs, and nilearn's favicon link (to GitHub) is removed: it
    works offline. The background is the MNI152 template at
    :data:`VIEWER_BACKGROUND_MM`, palette-compressed. Colour maps as
    :func:`glass_brain_uri`.

    Returns
    -------
    document : str
    width, height : int
        The viewer's size in pixels.
    """
    img = nib.load(img) if not isinstance(img, nib.Nifti1Image) else img
    data = np.nan_to_num(np.asanyarray(img.dataobj, dtype=np.float32))
    signed = is_signed(data, two_sided)
    if not signed:
        data = np.abs(data)
    vmax = float(np.abs(data).max()) or 1.0
    with warnings.catch_warnings():
        # nothing above the threshold: an empty overlay (the selector's label gives the threshold)
        for message in ("empty mask", "The given float value must not exceed",
                        "Could not determine cut coords"):
            warnings.filterwarnings("ignore", message=message)
        view = plotting.view_img(nib.Nifti1Image(data, img.affine), bg_img=_viewer_background(),
                                 threshold=threshold, title=title,
                                 cmap=DIVERGING_CMAP if signed else SEQUENTIAL_CMAP,
                                 symmetric_cmap=signed, vmax=vmax, vmin=None if signed else 0.0,
                                 black_bg=False, width_view=600)
    document = _FAVICON.sub("", _compress_background(view.get_standalone()))
    return document, int(view.width), int(view.height)
