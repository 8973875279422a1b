"""The pain-pathway atlas: node table, build on a grid, laterality, outputs."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from fmri_pain.pathways.atlas import atlas_from_masks, build_atlas, write_atlas
from fmri_pain.pathways.nodes import hemispheres_for, read_node_table
from fmri_pain.config.pathways import PathwaysSpec, atlas_path

AFFINE_4MM = np.array([[4.0, 0, 0, -98], [0, 4, 0, -134], [0, 0, 4, -72], [0, 0, 0, 1]])


@pytest.fixture(scope="module")
def grid():
    return nib.Nifti1Image(np.zeros((50, 59, 48), np.int8), AFFINE_4MM)


@pytest.fixture(scope="module")
def atlases(grid):
    return {side: build_atlas(grid, side) for side in ("right", "left")}


def test_shipped_table_is_valid_and_complete():
    table = read_node_table(atlas_path())
    assert set(table["pathway"]) == {"lateral", "medial", "descending", "control"}
    for name in ("thal_VPL_VPM", "S1_leg", "S1_back", "S2_contra", "pIns_contra", "thal_medial", "ACC",
                 "MCC", "aIns_contra", "DLPFC_contra", "vmPFC", "PAG", "RVM"):
        assert name in set(table["name"])
    spheres = table[table["source"] == "sphere"]
    assert spheres["reference"].str.contains("Linnman").any()


def test_bad_table_names_file_and_row(tmp_path):
    table = pd.read_csv(atlas_path(), sep="\t", dtype=str, keep_default_na=False)
    table.loc[3, "pathway"] = "sideways"
    bad = tmp_path / "bad.tsv"
    table.to_csv(bad, sep="\t", index=False)
    with pytest.raises(ValueError, match=r"bad\.tsv row 5 .*sideways"):
        read_node_table(bad)
    table = pd.read_csv(atlas_path(), sep="\t", dtype=str, keep_default_na=False)
    table.loc[0, "labels"] = "No_Such_Label"
    table.to_csv(bad, sep="\t", index=False)
    with pytest.raises(ValueError, match="No_Such_Label"):
        build_atlas(nib.Nifti1Image(np.zeros((10, 10, 10)), AFFINE_4MM), table=bad)


def test_laterality_follows_pain_side(atlases):
    assert hemispheres_for("contra", "right") == ("L",)
    assert hemispheres_for("ipsi", "R") == ("R",)
    assert hemispheres_for("contra", "left") == ("R",)
    right = atlases["right"].nodes.set_index("name")
    left = atlases["left"].nodes.set_index("name")
    for name in ("S1_leg", "S2_contra", "pIns_contra", "aIns_contra", "thal_VPL_VPM"):
        assert right.loc[name, "x"] < 0 < left.loc[name, "x"], name
        assert right.loc[name, "hemisphere"] == "L" and left.loc[name, "hemisphere"] == "R"
    assert right.loc["S2_ipsi", "x"] > 0


def test_nodes_are_where_anatomy_puts_them(atlases):
    nodes = atlases["right"].nodes.set_index("name")
    assert (nodes["n_voxels"] > 0).all()
    assert nodes.loc["pIns_contra", "y"] < -10 < 0 < nodes.loc["aIns_contra", "y"]
    assert abs(nodes.loc["S1_leg", "x"]) < abs(nodes.loc["S1_back", "x"]) < abs(nodes.loc["S2_contra", "x"])
    assert nodes.loc["S1_leg", "z"] > 55 and nodes.loc["RVM", "z"] < nodes.loc["PAG", "z"] < 0
    assert np.allclose(nodes.loc["PAG", ["x", "y", "z"]].astype(float), [0, -32, -10], atol=2.5)
    assert nodes.loc["V1_control", "y"] < -70
    labels = np.asarray(atlases["right"].img.dataobj)
    # one label per voxel, every node's count matches the image
    for _, row in atlases["right"].nodes.iterrows():
        assert (labels == row["index"]).sum() == row["n_voxels"]


def test_simulator_like_spheres_fall_in_their_nodes(atlases):
    atlas = atlases["right"]
    labels = np.asarray(atlas.img.dataobj)
    inv = np.linalg.inv(atlas.img.affine)
    index = atlas.nodes.set_index("name")["index"]
    for xyz, name in (((-38, -20, 6), "pIns_contra"), ((52, -20, 18), "S2_ipsi"),
                      ((-10, -38, 66), "S1_leg"), ((0, -32, -10), "PAG"), ((36, 14, -2), "aIns_ipsi")):
        ijk = np.rint(inv[:3, :3] @ np.array(xyz) + inv[:3, 3]).astype(int)
        assert labels[tuple(ijk)] == index[name], (xyz, name)


def test_write_atlas_and_atlas_from_masks(tmp_path, grid):
    paths = write_atlas(tmp_path, target_img=grid, pain_side="left", spec=PathwaysSpec())
    assert set(paths) == {"atlas", "labels", "figure"}
    img = nib.load(paths["atlas"])
    labels = pd.read_csv(paths["labels"], sep="\t")
    assert set(np.unique(np.asarray(img.dataobj))) - {0} <= set(labels["index"])
    assert paths["figure"].stat().st_size > 10_000
    # masks -> atlas, overlap goes to the first node
    a = np.zeros(grid.shape, np.uint8)
    a[10:14, 10:14, 10:14] = 1
    b = np.zeros(grid.shape, np.uint8)
    b[12:16, 10:14, 10:14] = 1
    for name, data in (("a", a), ("b", b)):
        nib.save(nib.Nifti1Image(data, AFFINE_4MM), tmp_path / f"{name}.nii.gz")
    atlas = atlas_from_masks({"a": tmp_path / "a.nii.gz", "b_control": tmp_path / "b.nii.gz"})
    nodes = atlas.nodes.set_index("name")
    assert nodes.loc["a", "n_voxels"] == 64 and nodes.loc["b_control", "n_voxels"] == 32
    assert nodes.loc["b_control", "pathway"] == "control"
