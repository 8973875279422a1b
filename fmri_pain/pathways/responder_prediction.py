"""Leave-one-subject-out prediction of response from pathway responses.

The classifier is scikit-learn's ``make_pipeline(StandardScaler(), RidgeClassifier(alpha))``
(least squares on labels coded -1 / +1 with an L2 penalty, features standardised on
the training subjects): one subject is held out at a time and its decision score
comes from a fit on the others. For this classifier the held-out scores are linear
in the labels, ``scores = M y`` with ``M`` depending on the features only
(:func:`loso_operator`; a test checks it against scikit-learn's own cross-validated
decision function), so the permutation null -- responder labels rearranged across
subjects, the whole cross-validation repeated for each -- costs one matrix product.
Accuracy, balanced accuracy and AUC (Mann-Whitney, of the held-out scores) are
tested against it: ``p = (1 + count) / (1 + n_permutations)``, or ``count / total``
over all distinct relabellings when there are no more than ``n_permutations + 1``.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from fmri_pain.pathways.responders import label_rearrangements

RIDGE_ALPHA = 1.0
"""L2 penalty of the ridge classifier (on standardised features)."""

METRICS = ("accuracy", "balanced_accuracy", "auc")


def loso_operator(X: np.ndarray, alpha: float = RIDGE_ALPHA) -> np.ndarray:
    """``M`` such that the leave-one-out ridge decision scores are ``M @ y``.

    For held-out subject ``i``, the training features are standardised with their
    own mean and (population) standard deviation (a constant feature keeps scale
    1, as ``StandardScaler`` does), the ridge weights are
    ``w = (Z'Z + alpha I)^-1 Z' (y - mean y)`` and the score is ``z_i w + mean y``.

    Parameters
    ----------
    X : ndarray, shape (n_subjects, n_features)
    alpha : float

    Returns
    -------
    ndarray, shape (n_subjects, n_subjects), zero diagonal
    """
    X = np.asarray(X, dtype=float)
    n, p = X.shape
    M = np.zeros((n, n))
    for i in range(n):
        train = np.arange(n) != i
        mu = X[train].mean(axis=0)
        sd = X[train].std(axis=0)
        sd[sd < 1e-12 * max(1.0, float(np.abs(X).max()))] = 1.0
        Z = (X[train] - mu) / sd
        z_i = (X[i] - mu) / sd
        B = np.linalg.solve(Z.T @ Z + alpha * np.eye(p), Z.T)  # (p, n - 1); Z is centred, so B C = B
        M[i, train] = z_i @ B + 1.0 / (n - 1)
    return M


def prediction_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, balanced accuracy and AUC of decision ``scores`` for each row of ``labels``.

    Parameters
    ----------
    scores, labels : ndarray, shape (n_rearrangements, n_subjects)
        Held-out decision scores (> 0: predicted responder) and true labels (bool).
    """
    labels = np.atleast_2d(labels).astype(bool)
    scores = np.atleast_2d(scores)
    predicted = scores > 0
    n1 = labels.sum(axis=1)
    n0 = labels.shape[1] - n1
    hits1 = (predicted & labels).sum(axis=1)
    hits0 = (~predicted & ~labels).sum(axis=1)
    ranks = rankdata(scores, axis=1)
    auc = ((ranks * labels).sum(axis=1) - n1 * (n1 + 1) / 2) / (n1 * n0)
    return {"accuracy": (hits1 + hits0) / labels.shape[1],
            "balanced_accuracy": 0.5 * (hits1 / n1 + hits0 / n0), "auc": auc}


def predict_response(X: np.ndarray, responder: np.ndarray, *, n_permutations: int = 100,
                     random_state: int | np.random.Generator | None = 0,
                     alpha: float = RIDGE_ALPHA) -> dict:
    """Leave-one-subject-out prediction of responder status, with permutation p values.

    Parameters
    ----------
    X : ndarray, shape (n_subjects, n_features)
        One row per subject (e.g. its node effects under the condition).
    responder : ndarray of bool, shape (n_subjects,)
        Two or more subjects in each class.
    n_permutations : int
        Relabellings of the null (0: no p values).

    Returns
    -------
    dict with accuracy, balanced_accuracy, auc, their ``p_<metric>``, the null means
    ``null_mean_<metric>``, n_rearrangements (the observed labelling included), exhaustive,
    and ``scores`` (the held-out decision scores).
    """
    X = np.asarray(X, dtype=float)
    r = np.asarray(responder, dtype=bool)
    k1, k0 = int(r.sum()), int((~r).sum())
    if k1 < 2 or k0 < 2:
        raise ValueError(f"each class needs two or more subjects ({k1} responders, {k0} non-responders)")
    if X.ndim != 2 or X.shape[0] != len(r) or not np.isfinite(X).all():
        raise ValueError(f"X must be finite, shape (n_subjects={len(r)}, n_features), got {X.shape}")
    M = loso_operator(X, alpha)
    order = np.concatenate([np.flatnonzero(r), np.flatnonzero(~r)])
    rng = random_state if isinstance(random_state, np.random.Generator) else np.random.default_rng(random_state)
    if n_permutations > 0:
        relabel, exhaustive = label_rearrangements(len(r), k1, n_permutations, rng)
    else:
        relabel, exhaustive = (np.arange(len(r)) < k1)[None], False
    labels = np.zeros_like(relabel)
    labels[:, order] = relabel  # back to the subjects' order; row 0 is the observed labelling
    scores = np.where(labels, 1.0, -1.0) @ M.T
    metrics = prediction_metrics(scores, labels)
    out = {"n_responders": k1, "n_non_responders": k0, "n_features": X.shape[1],
           "scores": scores[0]}
    for name in METRICS:
        observed = float(metrics[name][0])
        out[name] = observed
        if n_permutations > 0:
            null = metrics[name]
            out[f"p_{name}"] = float((null >= observed - 1e-12).sum() / len(null))
            out[f"null_mean_{name}"] = float(null[1:].mean()) if not exhaustive else float(null.mean())
        else:
            out[f"p_{name}"] = out[f"null_mean_{name}"] = np.nan
    out["n_rearrangements"] = len(labels) if n_permutations > 0 else 0
    out["exhaustive"] = exhaustive
    return out
