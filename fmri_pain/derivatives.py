"""BIDS-derivative naming, atomic writes and provenance sidecars.

Every file the pipeline writes goes through :func:`atomic_write`, so a killed
run never leaves a half-written file that a resume could take for finished.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import tempfile
import threading
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import nibabel as nib
import pandas as pd

from fmri_pain import __version__

#: The template of the project's own preprocessing (and of the simulator's data): nilearn's
#: bundled MNI152 T1 (``nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz``,
#: ``load_mni152_template``).  nilearn's docs call it "asymmetrical ICBM152 2009, release a", but its
#: file name says ``nlin_sym_09a`` and the image is exactly mirror-symmetric about x = 0 (checked in
#: ``tests/test_space.py``): it is ICBM 2009a *symmetric*, TemplateFlow's ``MNI152NLin2009aSym``,
#: not fMRIPrep's default ``MNI152NLin2009cAsym`` (another image on another grid).
SPACE = "MNI152NLin2009aSym"
_UMASK = os.umask(0)
os.umask(_UMASK)
PIPELINE_NAME = "fmri-pain"

# Order of entities in BIDS file names (subset of the BIDS entity table).
_ENTITY_ORDER = ("sub", "ses", "task", "acq", "run", "space", "res", "contrast", "desc", "stat")

_VERSIONED_PACKAGES = (
    "fmri-pain", "nibabel", "nilearn", "nipype", "numpy", "scipy", "pandas",
    "scikit-learn", "statsmodels", "dask", "distributed", "pybids", "antspyx",
)


def bids_filename(entities: Mapping[str, Any], suffix: str, extension: str) -> str:
    """Build a BIDS file name from entities in canonical order.

    Parameters
    ----------
    entities : mapping
        Entity key -> value (``sub``, ``ses``, ``task``, ``run``, ``space``,
        ``contrast``, ``desc``, ``stat`` ...). ``None`` values are skipped.
    suffix : str
        e.g. ``bold``, ``statmap``, ``mask``.
    extension : str
        With leading dot, e.g. ``.nii.gz``.

    Examples
    --------
    >>> bids_filename({"sub": "01", "task": "stim", "contrast": "stim", "stat": "z"},
    ...               "statmap", ".nii.gz")
    'sub-01_task-stim_contrast-stim_stat-z_statmap.nii.gz'
    """
    unknown = set(entities) - set(_ENTITY_ORDER)
    if unknown:
        raise ValueError(f"unknown BIDS entities {sorted(unknown)}")
    parts = [f"{k}-{entities[k]}" for k in _ENTITY_ORDER if entities.get(k) not in (None, "")]
    for key, value in entities.items():
        if value not in (None, "") and not str(value).isalnum():
            raise ValueError(f"BIDS entity {key}-{value!r} must be alphanumeric")
    return "_".join(parts + [suffix]) + extension


def subject_dir(output_dir: Path | str, subject: str, session: str | None = None,
                datatype: str | None = "func") -> Path:
    """``OUTPUT/sub-XX[/ses-YY][/datatype]``."""
    path = Path(output_dir) / f"sub-{subject}"
    if session:
        path = path / f"ses-{session}"
    return path / datatype if datatype else path


def statmap_path(output_dir: Path | str, *, contrast: str, stat: str,
                 subject: str | None = None, session: str | None = None,
                 task: str | None = None, desc: str | None = None,
                 space: str = SPACE, extension: str = ".nii.gz") -> Path:
    """Path of a statistical map following the output contract.

    Subject maps go under ``sub-XX[/ses-YY]/func``; group maps (``subject=None``)
    under ``group/``.
    """
    entities = {"sub": subject, "ses": session, "task": task, "space": space,
                "contrast": contrast, "desc": desc, "stat": stat}
    name = bids_filename(entities, "statmap", extension)
    folder = subject_dir(output_dir, subject, session) if subject else Path(output_dir) / "group"
    return folder / name


def space_of(path: Path | str) -> str | None:
    """The ``space-`` entity of a BIDS file name (None when it has none)."""
    for part in Path(path).name.split("_"):
        if part.startswith("space-"):
            return part[len("space-"):]
    return None


def data_space(paths: list[Path | str], what: str = "inputs") -> str | None:
    """The one template space named by ``paths`` (their ``space-`` entity).

    Raises
    ------
    ValueError
        When the files name different spaces: maps in different templates are never mixed.
    """
    example = {space_of(p): Path(p).name for p in reversed(list(paths))}  # first file per space
    spaces = set(example)
    if len(spaces) > 1:
        named = ", ".join(f"{name} ({space or 'no space entity'})"
                          for space, name in sorted(example.items(), key=lambda kv: str(kv[0])))
        raise ValueError(f"{what} are in different template spaces: {named}; refusing to mix them "
                         "(set 'space' in the spec to choose one)")
    return spaces.pop() if spaces else None


def sidecar_path(path: Path | str) -> Path:
    """The JSON sidecar beside a NIfTI or TSV file."""
    path = Path(path)
    name = path.name
    for ext in (".nii.gz", ".nii", ".tsv", ".png", ".html"):
        if name.endswith(ext):
            return path.with_name(name[: -len(ext)] + ".json")
    return path.with_suffix(".json")


@contextlib.contextmanager
def atomic_write(path: Path | str, mode: str = "w") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` on success.

    The temporary file keeps ``path``'s extension so libraries that pick a
    format from the name (nibabel, matplotlib) behave. On error it is removed.

    Examples
    --------
    >>> with atomic_write(out) as tmp:   # doctest: +SKIP
    ...     img.to_filename(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates 0600 files; derivatives are shared like any other file.
    os.chmod(tmp, 0o666 & ~_UMASK)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(text: str, path: Path | str) -> Path:
    """Write text atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(data: Mapping[str, Any], path: Path | str) -> Path:
    """Write a JSON document atomically (sorted keys, indented)."""
    return write_text(json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n", path)


def write_tsv(df: pd.DataFrame, path: Path | str, sidecar: Mapping[str, Any] | None = None) -> Path:
    """Write a DataFrame as a BIDS TSV (``n/a`` for missing) atomically."""
    with atomic_write(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False, na_rep="n/a")
    if sidecar is not None:
        write_json(sidecar, sidecar_path(path))
    return Path(path)


def write_nifti(img: nib.spatialimages.SpatialImage, path: Path | str,
                sidecar: Mapping[str, Any] | None = None) -> Path:
    """Save an image atomically, with an optional JSON sidecar written after it."""
    with atomic_write(path) as tmp:
        nib.save(img, tmp)
    if sidecar is not None:
        write_json(sidecar, sidecar_path(path))
    return Path(path)


def write_figure(fig, path: Path | str, **savefig_kwargs) -> Path:
    """Save a matplotlib figure atomically."""
    savefig_kwargs.setdefault("dpi", 100)
    savefig_kwargs.setdefault("bbox_inches", "tight")
    with atomic_write(path) as tmp:
        fig.savefig(tmp, **savefig_kwargs)
    return Path(path)


_HASH_CACHE: dict[tuple[str, int, int], str] = {}
_HASH_LOCK = threading.Lock()


def sha256_file(path: Path | str) -> str:
    """Hex SHA-256 of a file's bytes, computed once per (path, size, mtime) in a process.

    Provenance sidecars and resume fingerprints hash the same inputs many times.
    """
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _HASH_LOCK:
        cached = _HASH_CACHE.get(key)
    if cached is None:
        cached = _hash_file(path)
        with _HASH_LOCK:
            _HASH_CACHE[key] = cached
    return cached


def _hash_file(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def software_versions() -> dict[str, str]:
    """Versions of Python and the packages the analysis depends on."""
    versions = {"python": platform.python_version(), "fmri-pain": __version__}
    for name in _VERSIONED_PACKAGES[1:]:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def provenance(inputs: Mapping[str, Path | str] | list[Path | str],
               parameters: Mapping[str, Any] | None = None,
               **extra: Any) -> dict[str, Any]:
    """A provenance record for an output: inputs with sha256, parameters, software.

    Parameters
    ----------
    inputs : mapping or list of paths
        The files the output was computed from.
    parameters : mapping, optional
        The analysis parameters that shaped the output.
    **extra
        Further fields (e.g. ``Description``, ``Method``).
    """
    items = inputs.items() if isinstance(inputs, Mapping) else ((str(p), p) for p in inputs)
    record = {
        "Sources": [
            {"name": str(name), "path": str(Path(p).resolve()), "sha256": sha256_file(p)}
            for name, p in items
        ],
        "Parameters": dict(parameters or {}),
        "SoftwareVersions": software_versions(),
        "GeneratedBy": [{"Name": PIPELINE_NAME, "Version": __version__}],
    }
    record.update(extra)
    return record


def has_own_preprocessing(output_dir: Path | str) -> bool:
    """Whether the participant level preprocessed raw scans into ``output_dir``."""
    return next(Path(output_dir).glob("sub-*/**/*_desc-preproc_bold.nii.gz"), None) is not None


def write_dataset_description(output_dir: Path | str, source: Path | str | None = None) -> Path:
    """Write ``dataset_description.json`` of the derivatives dataset."""
    description = {
        "Name": "fmri-pain derivatives",
        "BIDSVersion": "1.8.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{
            "Name": PIPELINE_NAME,
            "Version": __version__,
            "CodeURL": "https://github.com/fmri-pain/fmri-pain",
        }],
    }
    if source is not None:
        description["SourceDatasets"] = [{"URL": Path(source).resolve().as_uri()}]
    return write_json(description, Path(output_dir) / "dataset_description.json")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
