"""``Results.responders``: the responder tables by name, a clear error for an unknown one."""

import json

import pandas as pd
import pytest

from fmri_pain.bids.derivatives import write_tsv
from fmri_pain.results import load_results
from fmri_pain.bids.naming import pathway_table_name


def test_responder_tables_by_name(tmp_path):
    (tmp_path / "dataset_description.json").write_text(json.dumps({"Name": "x", "DatasetType": "derivative"}))
    folder = tmp_path / "group" / "pathways"
    status = pd.DataFrame({"subject": ["01", "02"], "condition": "SCS", "responder": [True, False],
                           "pain_relief": [60.0, 10.0]})
    write_tsv(status, folder / pathway_table_name("responders"))
    write_tsv(pd.DataFrame({"condition": ["SCS"], "node": ["S1"], "p_perm": [0.01]}),
              folder / pathway_table_name("responder_stats"))
    res = load_results(tmp_path)
    assert res.responders()["pain_relief"].tolist() == [60.0, 10.0]
    assert res.responders("stats")["p_perm"].iloc[0] == 0.01
    with pytest.raises(KeyError, match="no pathway table 'responder_prediction'"):
        res.responders("prediction")
    with pytest.raises(KeyError, match="no responder table 'odds'"):
        res.responders("odds")
