"""The analyst API reads the effect sizes back: group dz / Hedges' g maps and effect_sizes.tsv."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fmri_pain.config.pathways import PathwaysSpec
from fmri_pain.config.spec import AnalysisSpec
from fmri_pain.pathways.effect_size_outputs import write_effect_sizes
from fmri_pain.results import load_results
from tests.glm.second_level.test_group_honesty import make_trial
from tests.support.group import run_group_glm
from tests.support.pathways_fixtures import williams_design


def test_results_read_effect_size_maps_and_table(tmp_path):
    spec = AnalysisSpec()
    run_group_glm(tmp_path, make_trial(tmp_path, 6, spec), spec)
    res = load_results(tmp_path)
    subject_maps = np.stack([res.map("dualMinusScs", stat="effect", subject=s).get_fdata()
                             for s in res.subjects])
    dz = res.map("dualMinusScs", stat="dz", desc="paired").get_fdata()
    assert dz.shape == subject_maps.shape[1:]
    g = res.map("dualMinusScs", stat="hedgesg").get_fdata()
    assert np.all(np.isfinite(g))
    rng = np.random.default_rng(0)
    design = williams_design(6)
    effects = design.assign(effect=rng.normal(1, 1, len(design)), node="S1", pathway="lateral")
    out = tmp_path / "group" / "pathways"
    out.mkdir(parents=True, exist_ok=True)
    write_effect_sizes(effects, out, conditions=("SCS", "DRGS", "DUAL"),
                       spec=PathwaysSpec(n_bootstrap=200), params={})
    assert "effect_sizes" not in res.pathway_tables  # the files as indexed when loaded
    table = load_results(tmp_path).effect_sizes()
    assert {"psc", "dz", "hedges_g", "dz_ci_low", "dz_ci_high"} <= set(table.columns)
    assert isinstance(table, pd.DataFrame) and (table["n_subjects"] == 6).all()
    assert table["hedges_g"].to_numpy() == pytest.approx(table["dz"].to_numpy() * (1 - 3 / 19))
