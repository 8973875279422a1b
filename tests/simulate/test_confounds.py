"""The simulator's motion expansion, written independently, agrees with the analysis' one."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fmri_pain.preprocess.confounds import MOTION_COLUMNS, expand
from fmri_pain.simulate.confounds import friston_terms, motion_expansion
from fmri_pain.simulate.model import MOTION_COLUMNS as SIM_MOTION_COLUMNS


def _analysis_expansion(motion: np.ndarray) -> pd.DataFrame:
    return pd.concat([expand(motion[:, j], name) for j, name in enumerate(MOTION_COLUMNS)], axis=1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_motion_expansion_equals_the_analysis(seed):
    rng = np.random.default_rng(seed)
    motion = rng.standard_normal((57, 6)).cumsum(axis=0) * np.array([0.1] * 3 + [0.002] * 3)
    ours = pd.DataFrame(motion_expansion(motion))
    theirs = _analysis_expansion(motion)
    assert SIM_MOTION_COLUMNS == MOTION_COLUMNS
    assert list(ours.columns) == list(theirs.columns) and len(ours.columns) == 24
    pd.testing.assert_frame_equal(ours, theirs, check_exact=True)
    assert np.isnan(ours["rot_z_derivative1"].iloc[0]) and np.isnan(ours["rot_z_derivative1_power2"].iloc[0])


def test_signal_terms_equal_the_analysis():
    signal = np.random.default_rng(3).normal(800.0, 5.0, 40).astype(np.float32)
    pd.testing.assert_frame_equal(pd.DataFrame(friston_terms(signal, "global_signal")),
                                  expand(signal, "global_signal"), check_exact=True)


def test_motion_expansion_rejects_a_wrong_shape():
    with pytest.raises(ValueError, match="motion must be"):
        motion_expansion(np.zeros((10, 5)))
