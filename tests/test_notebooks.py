"""The notebooks: stored without outputs, in sync with their generator, and they run.

Each notebook is executed with nbclient (kernel ``python3``, i.e. the Python
running the tests) against ``demo_output``; a cell that raises fails the test.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError



ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
NAMES = ["01_explore_contrasts.ipynb", "02_pathways.ipynb", "03_run_on_a_cluster.ipynb"]


def _builder():
    spec = importlib.util.spec_from_file_location("_nb_build", NOTEBOOKS / "_build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", NAMES)
def test_stored_without_outputs_and_in_sync(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name} has stored outputs"
    built = _builder().build(name)
    assert [c.source for c in nb.cells] == [c.source for c in built.cells], (
        f"{name} differs from notebooks/_build.py: run `python notebooks/_build.py`")


def _execute(name: str, env: dict[str, str], tmp_path: Path, timeout: int = 300) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    # the kernel imports this checkout even when the package is not installed
    env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits the environment of this process
    try:
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(tmp_path)}})
        # nbclient mimics a front end for Output widgets (ipywidgets' interact uses one) by
        # sending comm messages on the shell channel while it reads that channel: the next
        # cell then sometimes waits out the whole timeout (jupyter/nbclient#312, open; seen
        # here as 300 s after notebook 01's interact cell). Without the mimic the widget's
        # outputs are kept as the cell's own outputs.
        client.widget_registry = {}
        try:
            client.execute()
        except CellExecutionError as exc:
            pytest.fail(f"{name} failed:\n{exc}")
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    nbformat.write(nb, tmp_path / name)  # executed copy, for inspection
    return nb


def _text(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts.extend(str(v) for v in out.get("data", {}).values())
    return "\n".join(parts)


def _n_images(nb: nbformat.NotebookNode) -> int:
    return sum("image/png" in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", []))


def test_kernel_is_this_python():
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec("python3")
    # jupyter_client maps a bare "python" to sys.executable when it launches the kernel
    assert spec.argv[0] in ("python", "python3", sys.executable), spec.argv


def test_01_explore_contrasts(demo_output, tmp_path):
    nb = _execute("01_explore_contrasts.ipynb", {"FMRI_PAIN_RESULTS": str(demo_output)}, tmp_path)
    text = _text(nb)
    from fmri_pain.results.api import load_results

    res = load_results(demo_output)
    for contrast in res.group_contrasts:
        assert f"{contrast}: FDR q<0.05 threshold" in text
    assert _n_images(nb) >= len(res.group_contrasts)
    assert "brainsprite" in text.lower() or "iframe" in text.lower()  # the view_img viewer
    # the threshold explorer ran through ipywidgets' interact (its widget and show()'s output)
    assert "application/vnd.jupyter.widget-view+json" in {
        key for cell in nb.cells for out in cell.get("outputs", []) for key in out.get("data", {})}
    assert "fdr alpha=0.05: z >" in text


def test_02_pathways(demo_output, tmp_path):
    nb = _execute("02_pathways.ipynb", {"FMRI_PAIN_RESULTS": str(demo_output)}, tmp_path)
    assert _n_images(nb) >= 3  # ROI bars, forest plot, connectivity


@pytest.mark.skipif(importlib.util.find_spec("fmri_pain.cli") is None,
                    reason="fmri_pain.cli not available yet")
def test_03_run_on_a_cluster(tmp_path):
    nb = _execute("03_run_on_a_cluster.ipynb",
                  {"FMRI_PAIN_NOTEBOOK_QUICK": "1", "FMRI_PAIN_NOTEBOOK_WORK": str(tmp_path / "work")},
                  tmp_path, timeout=600)
    assert "Results" in _text(nb)
    assert list((tmp_path / "work" / "out").glob("sub-*/func/*_stat-z_statmap.nii.gz"))
