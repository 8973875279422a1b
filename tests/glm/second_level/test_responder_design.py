"""The two-group responder design: cell-means columns, the difference contrast, refusals."""

import numpy as np
import pandas as pd
import pytest

from fmri_pain.glm.second_level.responder_design import CONTRAST, responder_design


def test_cell_means_columns_and_the_difference_contrast():
    rows = pd.DataFrame({"subject": list("abcde"), "responder": [True, False, True, False, False]})
    design = responder_design(rows)
    assert list(design.design.columns) == ["responders", "nonResponders"]
    np.testing.assert_array_equal(design.design["responders"], [1, 0, 1, 0, 0])
    np.testing.assert_array_equal(design.design["nonResponders"], [0, 1, 0, 1, 1])
    np.testing.assert_array_equal(design.contrasts[CONTRAST], [1, -1])
    assert design.residual_dof == 3 and design.stat_type(CONTRAST) == "t"
    # least squares on the design gives the two group means; the contrast their difference
    y = np.array([4.0, 1.0, 6.0, 2.0, 3.0])
    beta = np.linalg.lstsq(design.design.to_numpy(), y, rcond=None)[0]
    assert beta @ design.contrasts[CONTRAST] == pytest.approx(5.0 - 2.0)


@pytest.mark.parametrize("responder, message", [
    ([True, False, False, False], "1 responder"),
    ([True, None, True, False], "status missing for subject"),
])
def test_refused_designs_say_why(responder, message):
    rows = pd.DataFrame({"subject": list("abcd"), "responder": pd.array(responder, dtype="boolean")})
    with pytest.raises(ValueError, match=message):
        responder_design(rows)
