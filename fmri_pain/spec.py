"""The analysis spec: one validated object, loaded from YAML/JSON with defaults.

The defaults live in ``pipelines/trial.yaml`` (and mirror the dataclass defaults
below, which a test checks). A user spec only lists what it changes; an unknown
key or a value of the wrong type or outside its allowed set is a
:class:`SpecError` that names the key.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from fmri_pain.pathways.spec import PathwaysSpec
from fmri_pain.preprocess.spec import PreprocessSpec
from fmri_pain.trial import CONDITIONS


class SpecError(ValueError):
    """An analysis spec that cannot be used; the message names the key and file."""


@dataclass(frozen=True)
class EventsSpec:
    """Which trial types mean what in ``events.tsv``."""

    on: str = "on"
    """trial_type of stimulator-ON blocks; the ``stim`` contrast is ON > baseline."""
    off: str | None = None
    """trial_type of explicit OFF blocks; if set, ``stim`` is ON > OFF."""


@dataclass(frozen=True)
class ConfoundsSpec:
    """Nuisance regressors from the fMRIPrep-style confounds TSV."""

    strategy: Literal["motion24", "motion6", "acompcor", "none"] = "motion24"
    """``motion24``: 6 motion parameters + derivatives + squares; ``acompcor``: motion24 + 6 aCompCor."""
    scrub: bool = True
    """Censor high-motion volumes (true censoring through ``sample_masks``)."""
    fd_threshold: float = 0.5
    """Framewise displacement (mm) above which a volume is censored."""
    std_dvars_threshold: float = 1.5
    """Standardised DVARS above which a volume is censored."""
    n_acompcor: int = 6
    """Number of aCompCor components with ``strategy: acompcor``."""


@dataclass(frozen=True)
class FirstLevelSpec:
    """Run-level GLM settings (nilearn ``FirstLevelModel`` semantics)."""

    hrf_model: Literal["spm", "spm + derivative", "spm + derivative + dispersion",
                       "glover", "glover + derivative", "fir"] = "spm"
    """HRF basis convolved with the ON blocks (nilearn names); ``fir`` uses ``fir_delays``."""
    fir_delays: tuple[int, ...] = (0, 1, 2, 3, 4, 5)
    """Delays (in scans) of the FIR basis with ``hrf_model: fir``."""
    noise_model: Literal["ar1", "ols"] = "ar1"
    """Serial-correlation model of the run GLM (AR(1) with nilearn's binning of rho, or OLS)."""
    drift_model: Literal["cosine", "polynomial", "none"] = "cosine"
    """Slow-drift regressors of the run GLM."""
    high_pass: float = 1.0 / 128
    """High-pass cut-off in Hz for the cosine drift basis (1/128 s)."""
    slice_time_ref: float | None = None
    """Sampling time of each volume as a fraction of the TR; null: ``StartTime / TR`` of
    slice-time-corrected data (fMRIPrep's convention), else 0."""
    smoothing_fwhm: float | None = 6.0
    """Gaussian smoothing kernel in mm (null: none)."""
    confounds: ConfoundsSpec = field(default_factory=ConfoundsSpec)
    contrasts: dict[str, str] = field(default_factory=dict)
    """Further run-level contrasts: name -> expression over trial types (nilearn syntax)."""


@dataclass(frozen=True)
class GroupSpec:
    """Group-level (crossover) model and parametric thresholds."""

    covariates: tuple[str, ...] = ()
    """Columns of sessions.tsv / participants.tsv added (mean-centred) to the group models."""
    fdr_q: float = 0.05
    """False discovery rate of the ``desc-fdr`` maps and cluster tables."""
    fwe_alpha: float = 0.05
    """Family-wise error rate of the ``desc-fwe`` (Bonferroni) and permutation maps."""
    cluster_forming_z: float = 3.1
    """Height threshold (z) of cluster tables."""
    min_cluster_size: int = 0
    """Cluster-extent threshold in voxels applied to the thresholded maps."""
    smoothing_fwhm: float | None = None
    """Extra smoothing of subject maps at group level."""
    flip_to_pain_side: Literal["right", "left", "none"] = "right"
    """Mirror (x -> -x) the maps of patients whose ``pain_side`` (participants.tsv) is the other
    side, so contralateral responses overlap; ``none`` keeps every map as acquired."""


@dataclass(frozen=True)
class InferenceSpec:
    """Nonparametric (permutation) inference at group level."""

    enabled: bool = True
    """Run permutation inference for every group contrast."""
    n_perm: int = 1000
    """Random rearrangements (sign flips / within-subject shuffles) per contrast."""
    tfce: bool = True
    """Also compute TFCE (H = 2, E = 0.5, 26-connectivity) with its FWE p map."""
    cluster_forming_p: float = 0.001
    """Uncorrected p of the cluster-forming threshold of cluster-extent / cluster-mass inference."""
    seed: int = 0
    """Seed of the random rearrangements (results are reproducible)."""
    n_jobs: int = 1
    """Threads of the permutation engine (voxel ranges for max-t; chunks of permutations with TFCE or clusters)."""


@dataclass(frozen=True)
class ExecutionSpec:
    """Where and how participant-level tasks run."""

    scheduler: str = "local"
    """``local`` (dask LocalCluster), ``none`` (serial), ``slurm``/``pbs``/``sge`` or ``tcp://HOST:PORT``."""
    n_workers: int | None = None
    """Local workers (null: one per core)."""
    threads_per_worker: int = 1
    """Threads per worker; BLAS threads are pinned to it."""
    memory_per_worker: str = "4GiB"
    """Memory limit of a local worker."""
    retries: int = 1
    """Retries for infrastructure failures (killed workers); input errors are never retried."""
    queue: str | None = None
    """Batch queue / partition (SLURM, PBS, SGE)."""
    account: str | None = None
    """Batch account / project to charge."""
    walltime: str = "02:00:00"
    """Wall-time limit of each batch job."""
    job_cores: int = 1
    """Cores requested per batch job (one worker per job)."""
    job_memory: str = "8GiB"
    """Memory requested per batch job."""
    job_extra_directives: tuple[str, ...] = ()
    """Extra scheduler directives, e.g. ``--constraint=avx2``."""
    worker_python: str | None = None
    """Python used by batch-job workers, e.g. ``apptainer exec fmri-pain.sif python``."""
    max_jobs: int = 8
    """Most batch jobs submitted at once."""


@dataclass(frozen=True)
class AnalysisSpec:
    """Everything that shapes an analysis, passed down to every stage."""

    conditions: tuple[str, ...] = CONDITIONS
    """Condition names; session labels and sessions.tsv ``condition`` map to them case-insensitively."""
    task: str | None = "stim"
    """BIDS task to analyse (null: the only task in the dataset)."""
    space: str | None = None
    """Template space of the preprocessed data read (every output is named by the space of its data).
    null: on the raw route, the template of the project's own preprocessing (``MNI152NLin2009aSym``,
    nilearn's bundled ICBM 2009a symmetric T1); with ``--derivatives``, the one space each run has
    there (among several, fMRIPrep's default ``MNI152NLin2009cAsym`` with a warning; without it, an
    error naming them). A value selects that space among fMRIPrep's outputs (e.g.
    ``MNI152NLin2009cAsym``, ``MNI152NLin6Asym``)."""
    events: EventsSpec = field(default_factory=EventsSpec)
    min_volumes: int = 20
    """Runs with fewer volumes are rejected as input errors."""
    preprocess: PreprocessSpec = field(default_factory=PreprocessSpec)
    first_level: FirstLevelSpec = field(default_factory=FirstLevelSpec)
    group: GroupSpec = field(default_factory=GroupSpec)
    inference: InferenceSpec = field(default_factory=InferenceSpec)
    pathways: PathwaysSpec = field(default_factory=PathwaysSpec)
    execution: ExecutionSpec = field(default_factory=ExecutionSpec)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (for provenance sidecars)."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))

    def replace(self, **changes: Any) -> AnalysisSpec:
        """A copy with top-level fields changed (nested: pass a dict)."""
        return spec_from_dict({**self.to_dict(), **changes})


def load_spec(path: Path | str | None = None) -> AnalysisSpec:
    """Load and validate an analysis spec.

    Parameters
    ----------
    path : path, optional
        A YAML or JSON file. Missing keys take their defaults; ``None`` gives
        the default spec.

    Raises
    ------
    SpecError
        On unreadable files, unknown keys or invalid values.
    """
    if path is None:
        return AnalysisSpec()
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError(f"cannot read analysis spec {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise SpecError(f"analysis spec {path} must be a mapping, got {type(data).__name__}")
    return spec_from_dict(data, source=str(path))


def spec_from_dict(data: dict[str, Any], source: str = "<spec>") -> AnalysisSpec:
    """Validate a nested dict against :class:`AnalysisSpec`."""
    return _build(AnalysisSpec, data, source, prefix="")


def _build(cls: type, data: Any, source: str, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise SpecError(f"{source}: '{prefix or 'spec'}' must be a mapping, got {data!r}")
    booleans = [k for k in data if isinstance(k, bool)]
    if booleans:
        raise SpecError(f"{source}: key {booleans[0]} under '{prefix.rstrip('.') or 'spec'}' was read "
                        "as a boolean: quote 'on' / 'off' / 'yes' / 'no' keys in YAML")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise SpecError(
            f"{source}: unknown key(s) {', '.join(prefix + k for k in unknown)}; "
            f"allowed under '{prefix.rstrip('.') or 'spec'}': {', '.join(sorted(names))}"
        )
    kwargs = {k: _coerce(hints[k], v, source, prefix + k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{source}: {exc}") from exc


def _coerce(tp: Any, value: Any, source: str, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value or {}, source, key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, source, key)
            except SpecError as exc:
                errors.append(str(exc))
        raise SpecError(errors[-1] if errors else f"{source}: {key} may not be null")
    if origin is Literal:
        if value not in args:
            raise SpecError(f"{source}: {key} = {value!r} is not one of {list(args)}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise SpecError(f"{source}: {key} must be a list, got {value!r}")
        return tuple(_coerce(args[0], v, source, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise SpecError(f"{source}: {key} must be a mapping, got {value!r}")
        return {str(k): _coerce(args[1], v, source, f"{key}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(f"{source}: {key} must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(f"{source}: {key} must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise SpecError(f"{source}: {key} must be true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise SpecError(f"{source}: {key} must be a string, got {value!r}")
        return value
    if tp is Any:
        return value
    raise SpecError(f"{source}: {key} has an unsupported type {tp}")


def defaults_yaml() -> str:
    """The default spec as commented YAML (the content of ``pipelines/trial.yaml``)."""
    header = (
        "# The trial's default analysis spec: every key with its default value.\n"
        "# A spec of your own lists only what it changes (see docs/spec.md for every key).\n"
        "# Pass it with `fmri-pain BIDS OUT participant --spec my.yaml`.\n"
    )
    return header + yaml.safe_dump(AnalysisSpec().to_dict(), sort_keys=False)


if __name__ == "__main__":
    print(defaults_yaml(), end="")
