"""Rearrangements of the data rows: sign flips, permutations, exchangeability blocks.

Random draws (:func:`draw_rearrangements`), exhaustive enumeration of the
distinct ones (:func:`enumerate_rearrangements`) and their count
(:func:`count_rearrangements`), the scheme ``auto`` picks, and nilearn's
random stream (:func:`nilearn_rearrangements`). A rearrangement is
``(index, signs)``: the data row ``i`` becomes ``signs[i] * e[index[i]]``.
Rows with identical design values are tied, so shuffles that only swap them
are one rearrangement (Winkler et al. 2014, NeuroImage 92:381; PALM).
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from fmri_pain.glm.inference.design import orthonormal_basis, partition_design

__all__ = [
    "SCHEMES",
    "draw_rearrangements",
    "count_rearrangements",
    "enumerate_rearrangements",
    "rearrangements_to_use",
    "nilearn_rearrangements",
    "auto_scheme",
    "scheme_for_basis",
    "tie_labels",
]

SCHEMES = ("signflip", "permute", "within", "block-signflip", "within+signflip", "auto")


def draw_rearrangements(n_samples: int, n_perm: int, scheme: str, *, blocks: np.ndarray | None = None,
                        random_state: int | np.random.Generator | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Random rearrangements: ``(index, signs)`` of shape (n_perm, n_samples).

    The rearranged data are ``signs[p, i] * e[index[p, i]]``.
    ``signflip``: independent signs; ``permute``: free permutation;
    ``within``: permutation inside each block; ``block-signflip``: one sign
    per block; ``within+signflip``: both of the last two.
    """
    rng = np.random.default_rng(random_state)
    index = np.broadcast_to(np.arange(n_samples), (n_perm, n_samples)).copy()
    signs = np.ones((n_perm, n_samples))
    if scheme in ("within", "block-signflip", "within+signflip"):
        if blocks is None:
            raise ValueError(f"scheme {scheme!r} needs exchangeability blocks (blocks=)")
        _, inv = np.unique(blocks, return_inverse=True)
        members = [np.flatnonzero(inv == b) for b in range(inv.max() + 1)]
    if scheme == "signflip":
        signs = rng.choice([-1.0, 1.0], size=(n_perm, n_samples))
    elif scheme == "permute":
        index = rng.permuted(index, axis=1)
    if scheme in ("within", "within+signflip"):
        for rows in members:
            index[:, rows] = rng.permuted(np.broadcast_to(rows, (n_perm, rows.size)), axis=1)
    if scheme in ("block-signflip", "within+signflip"):
        flips = rng.choice([-1.0, 1.0], size=(n_perm, len(members)))
        signs = flips[:, inv]
    if scheme not in SCHEMES or scheme == "auto":
        raise ValueError(f"unknown permutation scheme {scheme!r}; choose from {SCHEMES[:-1]}")
    return index, signs


def tie_labels(design: np.ndarray | None, n_samples: int) -> np.ndarray:
    """Label of each row's design values: rows with equal labels are tied."""
    if design is None:
        return np.arange(n_samples)
    _, inv = np.unique(np.asarray(design, dtype=np.float64), axis=0, return_inverse=True)
    return inv.ravel()


def _block_members(blocks: np.ndarray | None, n_samples: int) -> tuple[list[np.ndarray], np.ndarray]:
    if blocks is None:
        return [np.arange(n_samples)], np.zeros(n_samples, dtype=np.int64)
    _, inv = np.unique(blocks, return_inverse=True)
    inv = inv.ravel()
    return [np.flatnonzero(inv == b) for b in range(inv.max() + 1)], inv


def _multinomial(labels: np.ndarray) -> int:
    """Distinct orderings of a sequence with repeated values: m! / prod(count!)."""
    counts = np.unique(labels, return_counts=True)[1]
    out = math.factorial(int(labels.size))
    for c in counts:
        out //= math.factorial(int(c))
    return out


def count_rearrangements(n_samples: int, scheme: str, *, blocks: np.ndarray | None = None,
                         design: np.ndarray | None = None) -> int:
    """Number of distinct rearrangements of a scheme, the identity included.

    ``signflip``: ``2**n``; ``block-signflip``: ``2**n_blocks``; ``permute``
    and ``within``: the orderings of each block (the whole sample for
    ``permute``) that differ in the design rows they put at each position,
    ``m! / prod(t!)`` per block of ``m`` rows with tie groups of ``t``
    identical design rows; ``within+signflip``: the product of both.
    """
    if scheme not in SCHEMES or scheme == "auto":
        raise ValueError(f"unknown permutation scheme {scheme!r}; choose from {SCHEMES[:-1]}")
    if scheme in ("within", "block-signflip", "within+signflip") and blocks is None:
        raise ValueError(f"scheme {scheme!r} needs exchangeability blocks (blocks=)")
    if scheme == "signflip":
        return 2 ** n_samples
    members, _ = _block_members(None if scheme == "permute" else blocks, n_samples)
    ties = tie_labels(design, n_samples)
    n_shuffles = math.prod(_multinomial(ties[rows]) for rows in members)
    if scheme == "block-signflip":
        return 2 ** len(members)
    if scheme == "within+signflip":
        return n_shuffles * 2 ** len(members)
    return n_shuffles


def _multiset_orderings(labels: np.ndarray) -> np.ndarray:
    """Every distinct ordering of ``labels`` (rows), the given order first."""
    m = labels.size
    if np.unique(labels).size == m:
        out = labels[np.array(list(itertools.permutations(range(m))), dtype=np.int64).reshape(-1, m)]
    else:  # next lexicographic permutation: each distinct ordering once
        seq = sorted(labels.tolist())
        rows = [tuple(seq)]
        while True:
            i = m - 2
            while i >= 0 and seq[i] >= seq[i + 1]:
                i -= 1
            if i < 0:
                break
            j = m - 1
            while seq[j] <= seq[i]:
                j -= 1
            seq[i], seq[j] = seq[j], seq[i]
            seq[i + 1:] = reversed(seq[i + 1:])
            rows.append(tuple(seq))
        out = np.array(rows, dtype=np.int64).reshape(-1, m)
    first = int(np.flatnonzero(np.all(out == labels[None], axis=1))[0])
    out[[0, first]] = out[[first, 0]]
    return out


def _orderings_to_index(orderings: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Row index arrays (local) realising each ordering of the tie labels.

    Position ``d`` must receive a row whose label is ``orderings[r, d]``; rows
    of one label are assigned in order, so the identity ordering gives the
    identity index.
    """
    sort_o = np.argsort(orderings, axis=1, kind="stable")
    sort_l = np.argsort(labels, kind="stable")
    index = np.empty_like(orderings)
    index[:, sort_l] = sort_o
    return index


def enumerate_rearrangements(n_samples: int, scheme: str, *, blocks: np.ndarray | None = None,
                             design: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every distinct rearrangement once, the identity first: ``(index, signs)``.

    Same conventions as :func:`draw_rearrangements`; the count is
    :func:`count_rearrangements` (shuffles that only swap rows with identical
    design values are listed once).
    """
    count = count_rearrangements(n_samples, scheme, blocks=blocks, design=design)
    members, inv = _block_members(None if scheme == "permute" else blocks, n_samples)
    index = np.arange(n_samples)[None].copy()
    signs = np.ones((1, n_samples))
    if scheme in ("permute", "within", "within+signflip"):
        ties = tie_labels(design, n_samples)
        per_block = [rows[_orderings_to_index(_multiset_orderings(ties[rows]), ties[rows])]
                     for rows in members]
        combos = np.indices([p.shape[0] for p in per_block]).reshape(len(per_block), -1).T
        index = np.empty((combos.shape[0], n_samples), dtype=np.int64)
        for b, (rows, perms) in enumerate(zip(members, per_block)):
            index[:, rows] = perms[combos[:, b]]
        signs = np.ones(index.shape)
    if scheme in ("signflip", "block-signflip", "within+signflip"):
        n_units = n_samples if scheme == "signflip" else len(members)
        bits = (np.arange(2 ** n_units, dtype=np.int64)[:, None] >> np.arange(n_units)) & 1
        flips = 1.0 - 2.0 * bits
        flips = flips if scheme == "signflip" else flips[:, inv]
        n_shuffles = index.shape[0]
        index = np.repeat(index, flips.shape[0], axis=0)
        signs = np.tile(flips, (n_shuffles, 1))
    assert index.shape[0] == count
    return index.astype(np.int64), signs



def rearrangements_to_use(n_samples: int, n_perm: int, scheme: str, *, n_distinct: int,
                          exhaustive: bool, blocks: np.ndarray | None = None,
                          design: np.ndarray | None = None,
                          random_state: int | np.random.Generator | None = None
                          ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The rearrangements a test evaluates, the observed one excluded, and the notes to record.

    ``exhaustive`` (every distinct rearrangement once, PALM's exact test): all
    ``n_distinct - 1`` non-identity ones from :func:`enumerate_rearrangements`, with a
    note when ``n_perm`` asked for at least as many; otherwise ``n_perm`` random draws
    (:func:`draw_rearrangements`).
    """
    if not exhaustive:
        return (*draw_rearrangements(n_samples, n_perm, scheme, blocks=blocks,
                                     random_state=random_state), [])
    index, signs = enumerate_rearrangements(n_samples, scheme, blocks=blocks, design=design)
    notes = []
    if n_perm >= n_distinct:
        notes.append(f"n_perm = {n_perm} exceeds the {n_distinct} distinct rearrangements "
                     f"({scheme}): all {n_distinct} were used once each, the observed one "
                     "included (exact test)")
    return index[1:], signs[1:], notes  # the identity is the observed statistic


def nilearn_rearrangements(n_samples: int, n_perm: int, *, intercept_test: bool,
                           random_state: int | np.random.RandomState | None = None,
                           n_jobs: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The rearrangements ``nilearn.mass_univariate.permuted_ols`` draws.

    Reproduces its random stream (a seed per job, cumulative sign swaps or
    cumulative shuffles of the design rows) so both engines can be run on the
    very same permutations; ``n_jobs`` must equal the effective number of
    jobs nilearn uses (``min(n_jobs, cpu_count)``).
    """
    rng = np.random.RandomState(random_state) if not isinstance(random_state, np.random.RandomState) \
        else random_state
    if n_perm > n_jobs:
        chunks = np.asarray([n_perm / n_jobs] * n_jobs, dtype=int)
        chunks[-1] += n_perm % n_jobs
    else:
        chunks = np.ones(n_perm, dtype=int)
    index, signs = [], []
    for n_chunk in chunks:
        sub = np.random.RandomState(rng.randint(1, np.iinfo(np.int32).max - 1))
        sign = np.ones(n_samples)
        composite = np.arange(n_samples)
        for _ in range(n_chunk):
            if intercept_test:
                sign = sign * (sub.randint(2, size=(n_samples, 1)) * 2 - 1)[:, 0]
                index.append(np.arange(n_samples))
                signs.append(sign.copy())
            else:
                composite = composite[sub.permutation(n_samples)]
                # nilearn shuffles the design rows; the same fit shuffles the data inversely
                index.append(np.argsort(composite))
                signs.append(np.ones(n_samples))
    return np.asarray(index), np.asarray(signs, dtype=float)



def auto_scheme(design: np.ndarray, contrast: np.ndarray, blocks: np.ndarray | None = None) -> str:
    """The scheme ``scheme="auto"`` picks for this design, contrast and blocks."""
    return scheme_for_basis(partition_design(design, contrast)[0], blocks)


def scheme_for_basis(q_x: np.ndarray, blocks: np.ndarray | None) -> str:
    """:func:`auto_scheme` given the orthonormal basis ``q_x`` of the tested effect."""
    if blocks is None:
        const = np.ones((q_x.shape[0], 1)) / math.sqrt(q_x.shape[0])
        in_const = q_x.shape[1] == 1 and abs(float(const[:, 0] @ q_x[:, 0])) > 1 - 1e-9
        return "signflip" if in_const else "permute"
    _, inv = np.unique(blocks, return_inverse=True)
    q_b = orthonormal_basis(np.eye(inv.max() + 1)[inv])
    between = np.allclose(q_b @ (q_b.T @ q_x), q_x, atol=1e-9)
    return "block-signflip" if between else "within"

