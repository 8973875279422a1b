"""Where derivatives go (named through :mod:`fmri_pain.bids.naming`), atomic writes, provenance.

Every file the pipeline writes goes through :func:`atomic_write`, so a killed
run never leaves a half-written file that a resume could take for finished.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import re
import tempfile
import threading
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import nibabel as nib
import pandas as pd

from fmri_pain._version import __version__
from fmri_pain.bids.naming import bids_filename

#: The template of the project's own preprocessing (and of the simulator's data): nilearn's
#: bundled MNI152 T1 (``nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz``,
#: ``load_mni152_template``).  nilearn's docs call it "asymmetrical ICBM152 2009, release a", but its
#: file name says ``nlin_sym_09a`` and the image is exactly mirror-symmetric about x = 0 (checked in
#: ``tests/bids/test_space.py``): it is ICBM 2009a *symmetric*, TemplateFlow's ``MNI152NLin2009aSym``,
#: not fMRIPrep's default ``MNI152NLin2009cAsym`` (another image on another grid).
SPACE = "MNI152NLin2009aSym"
_UMASK = os.umask(0)
os.umask(_UMASK)
PIPELINE_NAME = "fmri-pain"

_VERSIONED_PACKAGES = (
    "fmri-pain", "nibabel", "nilearn", "nipype", "numpy", "scipy", "pandas",
    "scikit-learn", "statsmodels", "dask", "distributed", "pybids", "antspyx",
)


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
    When ``path`` already holds exactly the bytes written, it is left alone (the
    temporary file is dropped), so a re-run with nothing new changes no file or mtime.

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
        if _same_bytes(tmp, path):
            tmp.unlink()
        else:
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _same_bytes(a: Path, b: Path, chunk_size: int = 1 << 20) -> bool:
    """Whether files ``a`` and ``b`` exist with identical contents."""
    try:
        if not b.is_file() or a.stat().st_size != b.stat().st_size:
            return False
        with open(a, "rb") as fa, open(b, "rb") as fb:
            while True:
                block = fa.read(chunk_size)
                if block != fb.read(chunk_size):
                    return False
                if not block:
                    return True
    except OSError:
        return False


# atomic_write's temporary names: ".<stem>.<mkstemp's 8 random chars>.tmp<ext>", and
# ".<name>.tmp" of the preprocessing's figure copies.
_TEMPORARY_RE = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+){0,2}$"
                           r"|^\..+\.(png|svg|html|tsv|json|nii|nii\.gz)\.tmp$")


def is_temporary_name(name: str) -> bool:
    """Whether ``name`` is a temporary file name made by :func:`atomic_write`."""
    return _TEMPORARY_RE.match(name) is not None


def remove_orphaned_temporaries(folder: Path | str) -> list[Path]:
    """Delete :func:`atomic_write` temporaries that a killed run left under ``folder``.

    Only safe while no other run writes into ``folder`` (hold its
    :class:`~fmri_pain.bids.output_lock.OutputLock`). Returns the removed paths.
    """
    removed = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
        for name in files:
            if is_temporary_name(name):
                path = Path(root) / name
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(path)
    return removed


def write_text(text: str, path: Path | str) -> Path:
    """Write text atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes(data: bytes, path: Path | str) -> Path:
    """Write bytes (a PNG rendered in memory, say) atomically."""
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_if_changed(text: str, path: Path | str) -> bool:
    """Write ``text`` atomically unless ``path`` already holds it; whether it wrote.

    A re-run with nothing to do then leaves files (and their mtimes) alone.
    """
    path = Path(path)
    with contextlib.suppress(OSError, UnicodeDecodeError):
        if path.read_text(encoding="utf-8") == text:
            return False
    write_text(text, path)
    return True


def write_json(data: Mapping[str, Any], path: Path | str) -> Path:
    """Write a strict JSON document atomically (sorted keys, indented).

    Non-finite numbers (NaN, +-Infinity), which strict parsers reject, are
    written as ``null``; where a null needs explaining, the producer of the
    record adds a sibling description (e.g. ``z_threshold_description``).
    """
    return write_text(json_text(data) + "\n", path)


def json_text(data: Any, *, indent: int | None = 2) -> str:
    """``data`` as strict JSON text: sorted keys, non-finite numbers as ``null``."""
    return json.dumps(strict_json_value(data), indent=indent, sort_keys=True, allow_nan=False)


def strict_json_value(value: Any) -> Any:
    """``value`` with paths, numpy scalars/arrays converted and non-finite floats as None."""
    if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k) if not isinstance(k, (str, int, float, bool)) else k: strict_json_value(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json_value(v) for v in value]
    return strict_json_value(_json_default(value))


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


def dataset_root(path: Path | str) -> Path | None:
    """The nearest folder at or above ``path`` holding a ``dataset_description.json``."""
    path = Path(path).resolve()
    for folder in (path, *path.parents) if path.is_dir() else path.parents:
        if (folder / "dataset_description.json").is_file():
            return folder
    return None


def dataset_name(root: Path | str) -> str:
    """The name a dataset is linked under in BIDS URIs: ``raw`` or its generator, e.g. ``fmriprep``.

    Raw datasets are ``raw``; a derivative dataset is named after the first
    ``GeneratedBy`` entry of its description (lower-case, alphanumeric), so
    fMRIPrep's outputs are ``bids:fmriprep:...``.
    """
    try:
        desc = json.loads((Path(root) / "dataset_description.json").read_text())
    except (OSError, ValueError):
        return "raw"
    if not isinstance(desc, dict) or desc.get("DatasetType") != "derivative":
        return "raw"
    generated = desc.get("GeneratedBy") or [{}]
    name = generated[0].get("Name", "") if isinstance(generated[0], dict) else ""
    return "".join(ch for ch in str(name).lower() if ch.isalnum()) or "derivatives"


def bids_uri(path: Path | str, dataset: Path | str | None = None) -> str:
    """A BIDS URI for ``path``: ``bids::<relative path>`` inside ``dataset`` (the one being
    written), ``bids:<name>:<relative path>`` inside another BIDS dataset (see
    :func:`dataset_name`), else a ``file://`` URI.
    """
    path = Path(path).resolve()
    if dataset is not None and path.is_relative_to(Path(dataset).resolve()):
        return f"bids::{path.relative_to(Path(dataset).resolve()).as_posix()}"
    root = dataset_root(path)
    if root is not None:
        return f"bids:{dataset_name(root)}:{path.relative_to(root).as_posix()}"
    return path.as_uri()


def provenance(inputs: Mapping[str, Path | str] | list[Path | str],
               parameters: Mapping[str, Any] | None = None,
               dataset: Path | str | None = None,
               **extra: Any) -> dict[str, Any]:
    """A provenance record for an output: inputs as BIDS URIs with sha256, parameters, software.

    Parameters
    ----------
    inputs : mapping or list of paths
        The files the output was computed from (mapping keys are ignored:
        the URI names the file).
    parameters : mapping, optional
        The analysis parameters that shaped the output.
    dataset : path, optional
        Root of the derivatives dataset the output belongs to; inputs inside it
        are ``bids::`` URIs (relative to it).
    **extra
        Further fields (e.g. ``Description``, ``Method``).

    Returns
    -------
    dict
        ``Sources`` (BIDS URIs, in input order), ``SourceChecksums``
        (URI -> ``sha256:<hex>``), ``Parameters``, ``SoftwareVersions``,
        ``GeneratedBy`` and ``extra``.
    """
    paths = list(inputs.values()) if isinstance(inputs, Mapping) else list(inputs)
    uris = [bids_uri(p, dataset) for p in paths]
    record = {
        "Sources": uris,
        "SourceChecksums": {u: f"sha256:{sha256_file(p)}" for u, p in zip(uris, paths)},
        "Parameters": dict(parameters or {}),
        "SoftwareVersions": software_versions(),
        "GeneratedBy": [{"Name": PIPELINE_NAME, "Version": __version__}],
    }
    record.update(extra)
    return record


_CAMEL_WORDS = {"n": "NumberOf", "df": "DegreesOfFreedom", "fwe": "FWE", "fdr": "FDR",
                "tfce": "TFCE", "perm": "Permutations", "stat": "Statistic", "p": "P", "z": "Z"}


def camel_case(key: str) -> str:
    """A snake_case key in the CamelCase of BIDS sidecars: ``n_voxels_fwe`` -> ``NumberOfVoxelsFWE``."""
    return "".join(_CAMEL_WORDS.get(part, part[:1].upper() + part[1:])
                   for part in str(key).split("_") if part)


def camel_keys(record: Mapping[str, Any]) -> dict[str, Any]:
    """``record`` with every key (not nested ones) in :func:`camel_case`."""
    return {camel_case(k): v for k, v in record.items()}


def has_own_preprocessing(output_dir: Path | str) -> bool:
    """Whether the participant level preprocessed raw scans into ``output_dir``."""
    return next(Path(output_dir).glob("sub-*/**/*_desc-preproc_bold.nii.gz"), None) is not None


def write_dataset_description(output_dir: Path | str, source: Path | str | None = None,
                              derivatives: Path | str | None = None) -> Path:
    """Write ``dataset_description.json`` of the derivatives dataset (only when it changes).

    ``source`` (the raw dataset) and ``derivatives`` (e.g. fMRIPrep's outputs read as
    input) are listed in ``SourceDatasets`` and, under the names the sidecars'
    BIDS URIs use, in ``DatasetLinks``.
    """
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
    inputs = [Path(p).resolve() for p in (source, derivatives) if p is not None]
    inputs = [p for p in inputs if p != Path(output_dir).resolve()]
    if inputs:
        description["SourceDatasets"] = [{"URL": p.as_uri()} for p in inputs]
        description["DatasetLinks"] = {dataset_name(p): p.as_uri() for p in inputs}
    path = Path(output_dir) / "dataset_description.json"
    write_text_if_changed(json_text(description) + "\n", path)
    return path


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
