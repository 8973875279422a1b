"""The interfaces' shared base: one step function, outputs saved under their declared file names."""
from __future__ import annotations

import json
import os

import pandas as pd
from nipype.interfaces.base import BaseInterfaceInputSpec, File, TraitedSpec, traits

from fmri_pain.preprocess.interfaces.base import StepInterface, saved_file


class _InputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True)
    scale = traits.Float(2.0, usedefault=True)
    optional = traits.Int(desc="left out of the step's arguments while undefined")


class _OutputSpec(TraitedSpec):
    out_json = saved_file("summary.json", "a dict saved as JSON")
    out_table = saved_file("table.tsv", "a DataFrame saved as TSV")
    out_same = saved_file("unused.txt", "a path passed through")
    count = traits.Int(desc="a plain value")


class _Toy(StepInterface):
    input_spec = _InputSpec
    output_spec = _OutputSpec

    def _step(self, in_file, scale, **rest):
        assert rest == {}
        return {"out_json": {"scale": scale}, "out_table": pd.DataFrame({"x": [1.0, float("nan")]}),
                "out_same": in_file, "count": 3}


def test_step_interface_saves_outputs_by_declared_name(tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("x")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        out = _Toy(in_file=str(source)).run().outputs
    finally:
        os.chdir(cwd)
    assert out.out_json == str(tmp_path / "summary.json")
    assert json.loads((tmp_path / "summary.json").read_text()) == {"scale": 2.0}
    assert (tmp_path / "table.tsv").read_text() == "x\n1.0\nn/a\n"
    assert out.out_same == str(source) and not (tmp_path / "unused.txt").exists()
    assert out.count == 3
