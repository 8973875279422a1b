"""Connectome figures name their nodes (on the axial view, at the nodes' mm coordinates)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from nilearn import plotting  # noqa: E402

from fmri_pain.pathways.connectivity import label_nodes  # noqa: E402


def test_label_nodes_on_the_axial_view():
    names = ["S1_L", "ACC", "PAG"]
    coords = np.array([[-40.0, -25.0, 55.0], [0.0, 20.0, 30.0], [0.0, -30.0, -10.0]])
    matrix = np.array([[0, 1.0, 0.2], [1.0, 0, 0.5], [0.2, 0.5, 0]])
    fig = plt.figure(figsize=(9, 3.5))
    display = plotting.plot_connectome(matrix, coords, figure=fig, node_size=20)
    label_nodes(display, names, coords)
    texts = {t.get_text(): t.xy for t in display.axes["z"].ax.texts if t.get_text() in names}
    plt.close(fig)
    assert texts == {"S1_L": (-40.0, -25.0), "ACC": (0.0, 20.0), "PAG": (0.0, -30.0)}
