"""The house keeps its shape: import contracts (import-linter), module docstrings, test layout.

The contracts are declared in ``pyproject.toml`` (``[tool.importlinter]``) and explained in
``docs/architecture.md``. The contract run is checked twice: it passes on the package as it is,
and it fails when a forbidden import is added to a copy of the package (so a contract that
could never fail would be caught here).
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fmri_pain"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(project: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(project)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo", "pyproject.toml"], cwd=project,
                          env=env, capture_output=True, text=True, timeout=120)


def _contracts_section() -> str:
    text = (ROOT / "pyproject.toml").read_text()
    return text[text.index("[tool.importlinter]"):]


def test_import_contracts_hold():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 broken" in result.stdout


@pytest.mark.parametrize("module, forbidden, contract", [
    ("trial.py", "import fmri_pain.cli", "Layers"),
    ("config/fields.py", "from fmri_pain.bids import derivatives", "Layers"),
    ("glm/first_level/design.py", "import fmri_pain.preprocess.motion", "The GLM is built from runs"),
    ("glm/first_level/fixed_effects.py", "import fmri_pain.glm.inference.tfce", "Within the GLM"),
    ("simulate/model.py", "import fmri_pain.trial", "The simulator imports nothing of the analysis"),
    ("pathways/roi.py", "import fmri_pain.simulate", "No analysis module imports the simulator"),
])
def test_a_forbidden_import_breaks_a_contract(tmp_path, module, forbidden, contract):
    copy = tmp_path / "fmri_pain"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.nii*", "*.png"))
    (tmp_path / "pyproject.toml").write_text(_contracts_section())
    assert _lint(tmp_path).returncode == 0  # the copy is as clean as the package
    with open(copy / module, "a") as fh:
        fh.write(f"\n{forbidden}  # added by the test\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    broken = result.stdout.split("Broken contracts")[-1]
    assert contract in broken, result.stdout
    assert f"fmri_pain.{module[:-3].replace('/', '.')}" in broken


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_module_says_what_it_is_for(path):
    doc = ast.get_docstring(ast.parse(path.read_text()))
    assert doc and len(doc.split("\n\n")[0]) >= 20, f"{path.relative_to(ROOT)} has no opening docstring"


def test_tests_mirror_the_package():
    """Every test folder is a subpackage of fmri_pain (or the shared support folder)."""
    subpackages = {p.parent.relative_to(PACKAGE) for p in PACKAGE.rglob("__init__.py")}
    for init in (ROOT / "tests").rglob("__init__.py"):
        folder = init.parent.relative_to(ROOT / "tests")
        if folder in (Path("."), Path("support")):
            continue
        assert folder in subpackages, f"tests/{folder} mirrors no fmri_pain subpackage"
    stray = [p.name for p in (ROOT / "tests").glob("test_*.py")
             if (PACKAGE / p.name[len("test_"):]).is_file() is False and p.name not in _ROOT_LEVEL_TESTS]
    assert not stray, f"tests at the top of tests/ that belong in a subpackage folder: {stray}"


_ROOT_LEVEL_TESTS = {
    # Tests of the package as a whole (not of one subpackage) live at the top of tests/.
    "test_architecture.py", "test_container.py", "test_notebooks.py", "test_fuzz_inputs.py",
}


def test_no_import_cycle_and_the_drawing_is_the_house():
    """No module imports itself through others; docs/architecture.md draws today's graph."""
    import networkx as nx

    from tests.support.import_graph import mermaid, module_graph, room_graph

    modules = module_graph()
    assert nx.is_directed_acyclic_graph(modules), list(nx.simple_cycles(modules))[:5]
    rooms = room_graph(modules)
    assert nx.is_directed_acyclic_graph(rooms), list(nx.simple_cycles(rooms))[:5]
    drawing = mermaid(rooms)
    assert drawing in (ROOT / "docs" / "architecture.md").read_text(), (
        "docs/architecture.md: regenerate the drawing with `python -m tests.support.import_graph`")
