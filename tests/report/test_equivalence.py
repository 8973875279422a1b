"""The margin-tests section of group.html: the pathway table, its figures and the voxelwise maps,
read from what the stages wrote; and the analyst API reading the table back."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd

from fmri_pain.config.equivalence import EquivalenceSpec, EquivalenceTest
from fmri_pain.glm.inference.equivalence import (EquivalenceMapOutput, margin_permutation_test,
                                                 write_margin_maps)
from fmri_pain.pathways.equivalence import write_equivalence
from fmri_pain.report.equivalence import equivalence_methods, equivalence_report_section
from fmri_pain.results.api import Results
from fmri_pain.trial import CONDITIONS
from tests.support.pathways_fixtures import null_effects, williams_design


def _pathway_outputs(folder):
    design = williams_design(12)
    y = null_effects(design, 1, np.random.default_rng(0), residual_sd=0.2)[:, 0]
    effects = design.assign(node="S1_leg_contra", pathway="lateral", effect=y)
    section = EquivalenceSpec(tests=(EquivalenceTest("drgsMinusScs", "non-inferiority", 0.5),), maps=False)
    return write_equivalence(effects, section, folder, conditions=CONDITIONS, parameters={})


def test_section_shows_table_figures_and_maps(tmp_path):
    pathways = tmp_path / "group" / "pathways"
    pathways.mkdir(parents=True)
    outputs = _pathway_outputs(pathways)
    table = pd.read_csv(outputs["equivalence"], sep="\t")
    assert set(table["conclusion"]) == {"non-inferior"}  # D = 0, SD 0.2, margin 0.5
    mask = np.ones((4, 4, 4), bool)
    Y = np.random.default_rng(1).normal(0, 0.1, (8, 64))
    test = EquivalenceTest("drgsMinusScs", "equivalence", 0.5)
    result = margin_permutation_test(Y, np.ones((8, 1)), np.array([1.0]), test.kind, test.margin,
                                     n_perm=500, mask=mask)
    mask_img = nib.Nifti1Image(mask.astype(np.uint8), np.eye(4))
    paths = write_margin_maps(result, mask_img, tmp_path, contrast="drgsMinusScs", task="stim",
                              space=None, sidecar={"Alpha": 0.05, "NumberOfVoxelsDeclared": 57,
                                                   **result.sidecar_fields()})
    maps = [EquivalenceMapOutput(test, "paired", result, paths),
            EquivalenceMapOutput(EquivalenceTest("dualMinusScs", "non-inferiority", 0.5), None, None,
                                 note="no paired or one-sample group map of dualMinusScs")]
    html = equivalence_report_section(outputs, maps)
    assert "non-inferiority not shown" not in html and html.count(">non-inferior<") == 2  # node and pathway rows
    assert "90% confidence intervals" in html and "data:image/png;base64" in html
    assert ">57<" in html and ">256<" in html  # voxels declared and 2^8 sign flips, from the sidecar
    assert "no paired or one-sample group map of dualMinusScs" in html
    assert equivalence_report_section(None, []) is None
    text = equivalence_methods(outputs, maps).text
    assert "(non-inferiority of drgsMinusScs (margin 0.5 psc))" in text and "[@schuirmann1987]" in text
    assert "t tests of the estimate against the margin with Satterthwaite df" in text
    assert "noncentral" not in text and "Voxelwise (equivalence of drgsMinusScs)" in text
    assert "(256 rearrangements" in text and equivalence_methods(None, maps[1:]) is None
    read = Results(tmp_path).equivalence()
    assert list(read["conclusion"]) == list(table["conclusion"])
