"""The trial's domain: sequences and contrast weights."""

import itertools

import numpy as np
import pytest

from fmri_pain.trial import (CONDITIONS, carryover_from, difference_contrasts, parse_sequence,
                             period_in_sequence, trial_contrasts, williams_sequences)


def test_williams_sequences_for_three_treatments_are_all_six_orders():
    seqs = williams_sequences()
    assert len(seqs) == 6
    assert set(seqs) == set(itertools.permutations(CONDITIONS))


@pytest.mark.parametrize("n", [3, 4, 5])
def test_williams_design_balances_first_order_carryover(n):
    conds = tuple(f"T{i}" for i in range(n))
    seqs = williams_sequences(conds)
    assert len(seqs) == (2 * n if n % 2 else n)
    # every treatment appears equally often in every period
    for period in range(n):
        counts = {c: sum(s[period] == c for s in seqs) for c in conds}
        assert len(set(counts.values())) == 1
    # every ordered pair (a followed by b) appears equally often
    pairs = {}
    for s in seqs:
        for a, b in zip(s, s[1:]):
            pairs[(a, b)] = pairs.get((a, b), 0) + 1
    assert len(pairs) == n * (n - 1)
    assert len(set(pairs.values())) == 1


def test_contrast_weights():
    con = trial_contrasts()
    assert set(con) == {"scs", "drgs", "dual", "drgsMinusScs", "dualMinusScs", "dualMinusDrgs",
                        "dualMinusMean", "conditionF"}
    np.testing.assert_array_equal(con["dualMinusScs"].weights, [-1, 0, 1])
    np.testing.assert_array_equal(con["drgsMinusScs"].weights, [-1, 1, 0])
    np.testing.assert_array_equal(con["dualMinusDrgs"].weights, [0, -1, 1])
    np.testing.assert_allclose(con["dualMinusMean"].weights, [-0.5, -0.5, 1])
    assert con["conditionF"].stat_type == "F"
    assert np.linalg.matrix_rank(con["conditionF"].weights) == 2
    # the F test spans exactly the space of all differences
    for name in ("drgsMinusScs", "dualMinusScs", "dualMinusDrgs", "dualMinusMean"):
        w = con[name].weights
        coef, *_ = np.linalg.lstsq(con["conditionF"].weights.T, w, rcond=None)
        np.testing.assert_allclose(con["conditionF"].weights.T @ coef, w, atol=1e-12)
    assert set(difference_contrasts(con)) == {"drgsMinusScs", "dualMinusScs", "dualMinusDrgs",
                                              "dualMinusMean"}
    assert con["dualMinusScs"].used_conditions == ("SCS", "DUAL")


def test_sequence_parsing_and_periods():
    seq = parse_sequence("scs-Drgs-DUAL")
    assert seq == ("SCS", "DRGS", "DUAL")
    assert period_in_sequence("dual", seq) == 3
    assert carryover_from("DUAL", seq) == "DRGS"
    assert carryover_from("SCS", seq) is None
    with pytest.raises(ValueError, match="unknown conditions"):
        parse_sequence("SCS-TENS-DUAL")


def test_other_condition_names():
    con = trial_contrasts(("A", "B"))
    assert set(con) == {"a", "b", "bMinusA"}
