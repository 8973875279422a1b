"""Multivariate decoding of the condition from subject x session effect maps.

For each task (all conditions, and every pair) and each region (every pathway's
nodes, and the whole brain), a scikit-learn pipeline -- ``StandardScaler`` then a
ridge classifier (L2-penalised least-squares linear classifier; with ~10^4
features and tens of maps it fits ~100x faster than a linear SVM, which matters
for permutation tests) -- is cross-validated leave-one-subject-out. Its accuracy is tested
against labels permuted *within subject* (``permutation_test_score`` with
``groups``: scikit-learn shuffles ``y`` inside each group, so each subject keeps its
own set of conditions and subject effects cannot masquerade as condition
information). The weight map is the classifier's coefficients on standardised
features after a fit on all maps.

Maps of subjects whose pain is on the other side than ``reference_side`` are
mirrored left-right first, so contralateral-to-pain voxels line up across subjects.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from fmri_pain.bids.naming import bids_filename, label
from fmri_pain.pathways.atlas import PathwayAtlas, atlas_on_grid
from fmri_pain.pathways.nodes import normalise_pain_side
from fmri_pain.pathways.roi import load_map
from fmri_pain.trial import CONDITIONS

DECODING_COLUMNS = ("task", "region", "classes", "n_samples", "n_subjects", "n_features", "accuracy",
                    "chance", "permutation_mean", "p_perm", "n_permutations", "weights")


def mirror_x(img: nib.spatialimages.SpatialImage) -> nib.Nifti1Image:
    """The image mirrored about the mid-sagittal plane (x -> -x), on its own grid."""
    from nilearn.image import resample_to_img

    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    mirrored = nib.Nifti1Image(np.asarray(img.dataobj).astype(np.float32), flip @ img.affine)
    return resample_to_img(mirrored, img, interpolation="linear", force_resample=True,
                           copy_header=True)


def load_effect_matrix(maps: pd.DataFrame, reference_side: str = "right",
                       default_pain_side: str = "right") -> tuple[np.ndarray, nib.Nifti1Image]:
    """(maps x voxels) effects on the first map's grid, mirrored to ``reference_side``."""
    from nilearn.image import resample_to_img

    rows, ref = [], None
    for _, row in maps.iterrows():
        img = load_map(row["effect"], row["subject"], row.get("session"), "effect")
        if img.ndim > 3:
            img = nib.Nifti1Image(np.asarray(img.dataobj)[..., 0], img.affine)
        if ref is None:
            ref = img
        elif img.shape[:3] != ref.shape[:3] or not np.allclose(img.affine, ref.affine):
            img = resample_to_img(img, ref, interpolation="linear", force_resample=True,
                                  copy_header=True)
        side = normalise_pain_side(row.get("pain_side"), default_pain_side)
        if side != reference_side:
            img = mirror_x(img)
        rows.append(np.asarray(img.dataobj, dtype=np.float32).reshape(-1))
    return np.vstack(rows), ref


def within_group_shuffles(y: np.ndarray, groups: np.ndarray, n_permutations: int,
                           random_state: int) -> np.ndarray:
    """Label permutations within each group, drawn as scikit-learn's
    ``permutation_test_score`` draws them (same generator, same order), so its
    p values are reproduced exactly.

    Returns
    -------
    ndarray, shape (n_permutations, n_samples): row k is ``y`` of permutation k.
    """
    rng = np.random.RandomState(random_state)
    out = np.empty((n_permutations, len(y)), dtype=np.asarray(y).dtype)
    for k in range(n_permutations):
        indices = np.arange(len(groups))
        for group in np.unique(groups):
            this = groups == group
            indices[this] = rng.permutation(indices[this])
        out[k] = y[indices]
    return out


def _fold_operator(train: np.ndarray, test: np.ndarray, alpha: float) -> np.ndarray:
    """The test-set decision values of a standardised ridge fit (``StandardScaler`` fitted on
    ``train``, in float64) as a linear map of the
    centred training targets: ``D = M @ (Y - mean(Y)) + mean(Y)`` with
    ``M = Xc_test Xc_train' (Xc_train Xc_train' + alpha I)^-1`` (kernel form of the ridge
    solution; Xc are the standardised features centred on the training mean)."""
    from sklearn.preprocessing import StandardScaler

    train, test = np.asarray(train, dtype=np.float64), np.asarray(test, dtype=np.float64)
    scaler = StandardScaler().fit(train)
    Xtr, Xte = scaler.transform(train), scaler.transform(test)
    offset = Xtr.mean(0)  # ~0 after standardising; the ridge centres anyway
    Xtr, Xte = Xtr - offset, Xte - offset
    K = Xtr @ Xtr.T
    K[np.diag_indices_from(K)] += alpha
    return np.linalg.solve(K, Xtr @ Xte.T).T  # K is symmetric


def _ridge_accuracy(operators: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                    labels: np.ndarray, classes_of: list[np.ndarray]) -> np.ndarray:
    """Mean over folds of the test accuracy of ``RidgeClassifier`` for each row of
    ``labels`` (n_labelings, n_samples), from the folds' operators."""
    folds = np.empty((labels.shape[0], len(operators)))
    for f, ((M, train, test), classes) in enumerate(zip(operators, classes_of)):
        y_train, y_test = labels[:, train], labels[:, test]
        if len(classes) == 2:  # one column: +1 for the second class, -1 for the first
            Y = np.where(y_train == classes[1], 1.0, -1.0)[:, :, None]
        else:
            Y = np.where(y_train[:, :, None] == classes[None, None, :], 1.0, -1.0)
        mean = Y.mean(1, keepdims=True)
        D = np.einsum("ij,pjk->pik", M, Y - mean) + mean
        if len(classes) == 2:
            predicted = classes[(D[:, :, 0] > 0).astype(int)]
        else:
            predicted = classes[np.argmax(D, axis=2)]
        folds[:, f] = (predicted == y_test).mean(1)
    # row by row, as scikit-learn averages each labelling's list of fold scores: the same
    # summation order, so ties between permuted and observed accuracies stay ties
    return np.array([np.mean(row) for row in folds])


def decode(X: np.ndarray, y: np.ndarray, groups: np.ndarray, *, n_permutations: int = 100,
           random_state: int = 0, alpha: float = 1.0) -> dict:
    """Leave-one-subject-out accuracy, within-subject permutation p value, and weights.

    The pipeline is ``StandardScaler`` then ``RidgeClassifier(alpha)``. Permuting the
    labels leaves each fold's features unchanged, and a ridge fit is linear in its
    targets, so each fold's test decision values are one fixed matrix times the
    training targets: the folds are factorised once and every permutation costs a
    matrix product, instead of one scikit-learn fit per fold and permutation (the
    accuracies and p value equal ``permutation_test_score``'s, which a test checks).

    Returns
    -------
    dict with accuracy, permutation_mean, p_perm, chance, coef (classes x features),
    classes.
    """
    from sklearn.linear_model import RidgeClassifier
    from sklearn.model_selection import LeaveOneGroupOut
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(y)
    groups = np.asarray(groups)
    classes = np.unique(y)
    operators, classes_of = [], []
    for train, test in LeaveOneGroupOut().split(X, y, groups):
        fold_classes = np.unique(y[train])  # the same under within-subject permutations
        if len(fold_classes) < 2:
            raise ValueError(f"decoding: a training fold without subject "
                             f"{groups[test][0]!r} holds one class only ({fold_classes[0]!r})")
        operators.append((_fold_operator(X[train], X[test], alpha), train, test))
        classes_of.append(fold_classes)
    score = float(_ridge_accuracy(operators, y[None, :], classes_of)[0])
    if n_permutations > 0:
        perm_scores = _ridge_accuracy(
            operators, within_group_shuffles(y, groups, n_permutations, random_state), classes_of)
        p = (np.sum(perm_scores >= score) + 1.0) / (n_permutations + 1)
        perm_mean = float(np.mean(perm_scores))
    else:
        p, perm_mean = np.nan, np.nan
    final = make_pipeline(StandardScaler(), RidgeClassifier(alpha=alpha)).fit(X, y)
    coef = np.atleast_2d(final[-1].coef_)
    return {"accuracy": score, "permutation_mean": perm_mean, "p_perm": float(p),
            "chance": 1.0 / len(classes), "coef": coef, "classes": classes}


def decoding_tasks(conditions: list[str]) -> dict[str, list[str]]:
    """``all`` (3+ conditions) and every pair, e.g. ``dualVsDrgs``."""
    tasks = {}
    if len(conditions) >= 3:
        tasks["all"] = list(conditions)
    for first, second in itertools.combinations(conditions, 2):
        tasks[f"{second.lower()}Vs{first.lower().capitalize()}"] = [first, second]
    return tasks


def run_decoding(maps: pd.DataFrame, atlas_for: Callable[[str], PathwayAtlas], output_dir: Path, *,
                 conditions: tuple[str, ...] = CONDITIONS, n_permutations: int = 100,
                 random_state: int = 0, default_pain_side: str = "right",
                 whole_brain: bool = True, tasks: Sequence[str] | None = None,
                 node_groups: dict[str, Sequence[str]] | None = None) -> pd.DataFrame:
    """Decode the condition within each pathway and the whole brain; write weight maps.

    Parameters
    ----------
    maps : DataFrame
        subject, session, condition, effect (path), pain_side (optional).
    atlas_for : callable
        ``pain_side -> PathwayAtlas``; the atlas of ``default_pain_side`` defines regions.
    output_dir : Path
        Weight maps go to ``output_dir/desc-decoding<Task><Region>_weights.nii.gz``.
    whole_brain : bool
        Also decode from every voxel with data in all maps.
    tasks : list of str, optional
        Subset of the tasks (``all``, ``dualVsDrgs`` ...); default all.
    node_groups : dict, optional
        Extra regions: name -> node names (e.g. ``{"insulaAcc": [...]}``).

    Returns
    -------
    DataFrame with columns ``DECODING_COLUMNS``.
    """
    from fmri_pain.bids.derivatives import write_nifti

    present = [c for c in conditions if c in set(maps["condition"].astype(str))]
    all_tasks = decoding_tasks(present)
    tasks = {k: v for k, v in all_tasks.items() if tasks is None or k in tasks}
    if not tasks:
        return pd.DataFrame(columns=list(DECODING_COLUMNS))
    maps = maps.reset_index(drop=True)
    X_all, ref = load_effect_matrix(maps, default_pain_side, default_pain_side)
    atlas = atlas_on_grid(atlas_for(default_pain_side), ref)
    labels = np.asarray(atlas.img.dataobj).reshape(-1)
    valid = np.all(np.isfinite(X_all), axis=0) & np.all(X_all != 0, axis=0)
    regions = {p: np.isin(labels, atlas.nodes.loc[atlas.nodes["pathway"] == p, "index"]) & valid
               for p in dict.fromkeys(atlas.nodes["pathway"])}
    for group, names in (node_groups or {}).items():
        unknown = set(names) - set(atlas.nodes["name"])
        if unknown:
            raise ValueError(f"decoding node group {group!r}: unknown nodes {sorted(unknown)}")
        regions[group] = np.isin(labels, atlas.nodes.loc[atlas.nodes["name"].isin(names), "index"]) & valid
    if whole_brain:
        regions["wholeBrain"] = valid
    rows = []
    for task, conds in tasks.items():
        sel = maps["condition"].astype(str).isin(conds).to_numpy()
        y = maps.loc[sel, "condition"].astype(str).to_numpy()
        groups = maps.loc[sel, "subject"].astype(str).to_numpy()
        if len(np.unique(groups)) < 3:
            continue
        for region, mask in regions.items():
            if mask.sum() == 0:
                continue
            X = X_all[np.ix_(sel, mask)]
            result = decode(X, y, groups, n_permutations=n_permutations, random_state=random_state)
            weights = np.zeros((result["coef"].shape[0],) + ref.shape[:3], dtype=np.float32)
            for k, coef in enumerate(result["coef"]):
                flat = np.zeros(mask.size, dtype=np.float32)
                flat[mask] = coef
                weights[k] = flat.reshape(ref.shape[:3])
            data = weights[0] if weights.shape[0] == 1 else np.moveaxis(weights, 0, -1)
            path = write_nifti(
                nib.Nifti1Image(data, ref.affine),
                output_dir / bids_filename({"desc": label("decoding", task, region)}, "weights",
                                           ".nii.gz"),
                sidecar={"Description": "ridge-classifier weights on standardised features "
                                        f"(volume k = class {list(result['classes'])} one-vs-rest; "
                                        "binary: positive favours the second class)",
                         "Classes": [str(c) for c in result["classes"]]})
            rows.append({"task": task, "region": region, "classes": "-".join(result["classes"]),
                         "n_samples": int(sel.sum()), "n_subjects": int(len(np.unique(groups))),
                         "n_features": int(mask.sum()), "accuracy": result["accuracy"],
                         "chance": result["chance"], "permutation_mean": result["permutation_mean"],
                         "p_perm": result["p_perm"], "n_permutations": n_permutations,
                         "weights": str(path)})
    return pd.DataFrame(rows, columns=list(DECODING_COLUMNS))
