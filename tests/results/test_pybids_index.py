"""Every BIDS-named output is found by its entities through pybids (with the package's config),
and a re-run with nothing to do writes nothing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from fmri_pain.bids.naming import (HEMISPHERES, PATHWAY_TABLES, PYBIDS_ENTITIES, parse_bids_name,
                                   pybids_config_path)
from fmri_pain.results.index import index_outputs, output_layout

_KEYS = {short: name for name, short in PYBIDS_ENTITIES.items()}


def _outputs(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")
                  and p.relative_to(root).parts[0] not in ("logs", "work"))


def _query(ents: dict[str, str]) -> dict[str, object]:
    """The file's entities as a pybids query; the entities it lacks must be absent (None)."""
    query: dict[str, object] = {name: None for name in PYBIDS_ENTITIES
                                if name not in ("suffix", "extension")}
    query |= {_KEYS[k]: v for k, v in ents.items()}
    if "run" in ents:
        query["run"] = int(ents["run"])
    return query


def _check_found_by_entities(root: Path) -> list[Path]:
    """Every BIDS-named file of ``root`` is what ``layout.get(<its entities>)`` returns."""
    layout = output_layout(root)
    named = []
    for path in _outputs(root):
        ents = parse_bids_name(path.name)
        if ents is None:
            continue
        named.append(path)
        assert set(ents) <= set(_KEYS), f"{path.name}: entities outside the pybids config"
        found = layout.get(return_type="file", **_query(ents))
        assert found == [str(path.resolve())], (path, found)  # the entities name the file
    return named


def test_the_config_declares_the_entities_pybids_lacks():
    config = json.loads(pybids_config_path().read_text())
    assert {e["name"] for e in config["entities"]} == {"contrast", "stat", "condition"}


def test_fake_outputs_are_found_by_their_entities(fake_outputs):
    named = _check_found_by_entities(fake_outputs)
    assert len(named) > 50
    layout = output_layout(fake_outputs)
    z = layout.get(contrast="dualMinusScs", stat="t", suffix="statmap", extension=".nii.gz",
                   subject=None, return_type="file")
    assert [Path(p).name for p in z] == [
        "task-stim_space-MNI152NLin2009cAsym_contrast-dualMinusScs_stat-t_statmap.nii.gz"]
    roi = layout.get(desc="roiEffects", suffix="table", extension=".tsv", return_type="file")
    assert [Path(p).relative_to(fake_outputs.resolve()).as_posix() for p in roi] == [
        "group/pathways/desc-roiEffects_table.tsv"]
    # the files table is the layout's: the same files as the naming contract parses
    table = index_outputs(fake_outputs)
    expected = {p for p in named if p.relative_to(fake_outputs).parts[0] == "group"
                or parse_bids_name(p.name).get("sub")}
    assert set(table["path"]) == expected


def test_demo_output_is_found_by_its_entities(demo_output):
    named = _check_found_by_entities(demo_output)
    names = [p.name for p in _outputs(demo_output)]
    assert not [n for n in names if "hemi-" in n
                and n.split("hemi-")[1].split("_")[0] not in HEMISPHERES]
    pathways = [p for p in _outputs(demo_output) if p.parent.name == "pathways"]
    assert pathways and all(p in named for p in pathways), \
        [p.name for p in pathways if p not in named]
    layout = output_layout(demo_output)
    atlas = layout.get(atlas="painPathways", suffix="dseg", extension=".nii.gz", return_type="file")
    assert {parse_bids_name(Path(p).name)["desc"] for p in atlas} <= {"painLeft", "painRight"}
    assert atlas
    tables = {parse_bids_name(Path(p).name)["desc"]
              for p in layout.get(suffix="table", extension=".tsv", return_type="file")}
    assert {"roiEffects", "roiStats", "effectSizes"} <= tables <= set(PATHWAY_TABLES.values())
    # every group t map has its effect, variance, z and p maps (nilearn's save_glm_to_bids set)
    for t_map in layout.get(stat="t", suffix="statmap", extension=".nii.gz", subject=None,
                            desc=None, return_type="file"):
        contrast = parse_bids_name(Path(t_map).name)["contrast"]
        stats = {parse_bids_name(Path(p).name)["stat"] for p in layout.get(
            contrast=contrast, suffix="statmap", extension=".nii.gz", subject=None, desc=None,
            return_type="file")}
        assert {"effect", "variance", "t", "z", "p"} <= stats, (contrast, stats)
    for logp in layout.get(stat="logp", suffix="statmap", extension=".nii.gz", return_type="file"):
        assert Path(logp.replace("_stat-logp_", "_stat-p_")).is_file()


def _snapshot(root: Path) -> dict[str, tuple[int, str]]:
    return {p.relative_to(root).as_posix(): (p.stat().st_mtime_ns,
                                             hashlib.sha256(p.read_bytes()).hexdigest())
            for p in root.rglob("*") if p.is_file() and p.relative_to(root).parts[0] != "logs"}


@pytest.mark.slow
def test_a_rerun_with_nothing_to_do_writes_nothing(sim_trial, tmp_path):
    """Both levels twice into one folder on the same inputs and spec: the second run rewrites no
    file (``logs/`` aside: the record of each run); mtimes and contents are unchanged."""
    from fmri_pain.cli import main

    out = tmp_path / "out"

    def run_both() -> None:
        for level in ("participant", "group"):
            assert main([str(sim_trial.bids_dir), str(out), level, "--derivatives",
                         str(sim_trial.derivatives_dir), "--scheduler", "none", "--quiet"]) == 0

    run_both()
    before = _snapshot(out)
    run_both()
    after = _snapshot(out)
    assert sorted(set(after) ^ set(before)) == []
    assert sorted(k for k in before if before[k] != after[k]) == []
