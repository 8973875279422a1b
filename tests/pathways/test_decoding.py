"""The factorised leave-one-subject-out ridge decoder equals scikit-learn's pipeline."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import RidgeClassifier
from sklearn.model_selection import LeaveOneGroupOut, permutation_test_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fmri_pain.pathways.decoding import decode, within_group_shuffles


def _maps(n_subjects: int, classes: list[str], n_features: int, seed: int, drop: int = 0):
    rng = np.random.default_rng(seed)
    groups = np.repeat([f"{i:02d}" for i in range(n_subjects)], len(classes))
    y = np.tile(np.array(classes), n_subjects)
    X = rng.standard_normal((len(y), n_features)).astype(np.float32)
    X[y == classes[0], : max(1, n_features // 10)] += 1.5  # some condition information
    X += rng.standard_normal((n_subjects, 1)).repeat(len(classes), 0).astype(np.float32)
    keep = np.ones(len(y), bool)
    keep[:drop] = False  # the first subject(s) miss a session
    return X[keep], y[keep], groups[keep]


@pytest.mark.parametrize("n_subjects, classes, n_features, drop", [
    (8, ["DRGS", "DUAL", "SCS"], 400, 0),     # more features than maps: kernel form
    (10, ["DRGS", "SCS"], 6, 0),              # fewer features than maps
    (9, ["DRGS", "DUAL", "SCS"], 300, 1),     # an incomplete subject
    (6, ["DUAL", "SCS"], 2000, 0),
])
def test_decode_equals_scikit_learn_permutation_test_score(n_subjects, classes, n_features, drop):
    X, y, groups = _maps(n_subjects, classes, n_features, seed=n_subjects + n_features, drop=drop)
    ours = decode(X, y, groups, n_permutations=40, random_state=3)
    model = make_pipeline(StandardScaler(), RidgeClassifier(alpha=1.0))
    score, perm, p = permutation_test_score(model, X, y, groups=groups, cv=LeaveOneGroupOut(),
                                            n_permutations=40, random_state=3, scoring="accuracy")
    assert ours["accuracy"] == score
    assert ours["p_perm"] == p
    assert ours["permutation_mean"] == pytest.approx(float(np.mean(perm)), abs=1e-12)
    assert ours["accuracy"] > 1.0 / len(classes)  # the planted information is found


def test_within_group_shuffles_keep_each_subjects_labels():
    y = np.array(list("abcabcab"))
    groups = np.array([1, 1, 1, 2, 2, 2, 3, 3])
    shuffles = within_group_shuffles(y, groups, 25, random_state=0)
    assert shuffles.shape == (25, 8)
    for row in shuffles:
        for g in np.unique(groups):
            assert sorted(row[groups == g]) == sorted(y[groups == g])
    assert len({tuple(r) for r in shuffles}) > 1


def test_a_fold_with_one_class_is_an_error():
    X = np.random.default_rng(0).standard_normal((4, 5))
    with pytest.raises(ValueError, match="one class only"):
        decode(X, np.array(["a", "b", "a", "a"]), np.array(["1", "1", "2", "3"]),
               n_permutations=0)
