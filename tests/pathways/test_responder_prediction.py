"""LOSO prediction of response: the closed-form operator against scikit-learn; power and null calibration."""

import numpy as np
import pytest
from scipy import stats

from fmri_pain.pathways.responder_prediction import loso_operator, prediction_metrics, predict_response


def test_the_operator_is_scikit_learns_cross_validated_ridge_classifier():
    from sklearn.linear_model import RidgeClassifier
    from sklearn.model_selection import LeaveOneOut, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(5)
    X = rng.normal(size=(13, 6)) * [1, 2, 3, 0.5, 1, 1]
    X[:, 4] = 2.0  # a constant feature: StandardScaler keeps scale 1
    y = rng.permutation(np.arange(13) < 6)
    for alpha in (0.1, 1.0, 10.0):
        expected = cross_val_predict(make_pipeline(StandardScaler(), RidgeClassifier(alpha=alpha)), X, y,
                                     cv=LeaveOneOut(), method="decision_function")
        np.testing.assert_allclose(loso_operator(X, alpha) @ np.where(y, 1.0, -1.0), expected, atol=1e-10)


def test_metrics_match_scikit_learn():
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score

    rng = np.random.default_rng(1)
    scores = rng.normal(size=15)
    y = rng.permutation(np.arange(15) < 5)
    got = prediction_metrics(scores[None], y[None])
    assert got["accuracy"][0] == pytest.approx(accuracy_score(y, scores > 0))
    assert got["balanced_accuracy"][0] == pytest.approx(balanced_accuracy_score(y, scores > 0))
    assert got["auc"][0] == pytest.approx(roc_auc_score(y, scores))


def test_a_planted_difference_is_predicted():
    rng = np.random.default_rng(3)
    n_sets, hits = 20, 0
    for i in range(n_sets):
        y = rng.permutation(np.arange(20) < 10)
        X = rng.normal(size=(20, 8))
        X[:, 1] += 3.0 * y  # one informative node of eight (3 SD)
        result = predict_response(X, y, n_permutations=199, random_state=i)
        assert result["p_auc"] >= 1 / 200
        hits += result["p_auc"] <= 0.05 and result["auc"] > 0.75
    assert hits >= 0.8 * n_sets, hits


def test_small_samples_use_every_relabelling_once():
    rng = np.random.default_rng(0)
    result = predict_response(rng.normal(size=(6, 3)), np.arange(6) < 3, n_permutations=100)
    assert result["exhaustive"] and result["n_rearrangements"] == 20
    assert min(result["p_accuracy"], result["p_auc"]) >= 1 / 20


def test_the_prediction_p_values_are_calibrated_under_the_null():
    rng = np.random.default_rng(42)
    n_sets = 200
    counts = {"p_accuracy": 0, "p_balanced_accuracy": 0, "p_auc": 0}
    for _ in range(n_sets):  # n = 20 subjects, 9 responders at random, 6 node effects, no signal
        X = rng.normal(size=(20, 6))
        y = rng.permutation(np.arange(20) < 9)
        result = predict_response(X, y, n_permutations=99, random_state=rng)
        for key in counts:
            counts[key] += result[key] <= 0.05
    lo, hi = stats.binom.interval(0.95, n_sets, 0.05)  # (4, 16)
    for key, count in counts.items():
        assert lo <= count <= hi, (key, count)


def test_a_class_of_one_is_refused():
    with pytest.raises(ValueError, match="two or more"):
        predict_response(np.zeros((5, 2)), np.arange(5) < 1)
