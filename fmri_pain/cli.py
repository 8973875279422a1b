"""Command line: a BIDS App plus ``simulate``, ``demo``, ``atlas`` and ``permute``; all argparse lives here.

::

    fmri-pain BIDS_DIR OUTPUT_DIR participant [--participant-label 01 02] [--derivatives DIR]
              [--session-label scs dual] [--bids-filter-file FILE] [--boilerplate] ...
    fmri-pain BIDS_DIR OUTPUT_DIR group
    fmri-pain simulate OUT [--subjects N] [--seed S] [--derivatives]
    fmri-pain demo OUT
    fmri-pain atlas OUT
    fmri-pain permute OUT MAP [MAP ...] --mask MASK [--design TSV --contrast C --blocks COL]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from fmri_pain._version import __version__
from fmri_pain.cli_options import add_fmriprep_arguments, parse_memory, version_requested
from fmri_pain.errors import InputError
from fmri_pain.config.fields import SpecError

if TYPE_CHECKING:
    from fmri_pain.config.spec import AnalysisSpec

LOGGER = logging.getLogger("fmri_pain")

_DESCRIPTION = """\
fmri-pain: fMRI of a SCS / DRGS / DUAL crossover trial in refractory neuropathic pain.

BIDS-App usage:
  fmri-pain BIDS_DIR OUTPUT_DIR participant   preprocess (raw input) or read fMRIPrep
                                              derivatives (--derivatives), fit first-level
                                              GLMs, within-subject condition contrasts
  fmri-pain BIDS_DIR OUTPUT_DIR group         crossover group models, thresholds, cluster
                                              tables, permutation inference, pain pathways

Other commands:
  fmri-pain simulate OUT                      write a simulated trial (raw BIDS, optional
                                              fMRIPrep-style derivatives, ground truth)
  fmri-pain demo OUT                          simulate a small trial and run both levels
  fmri-pain atlas OUT                         write the pain-pathway atlas on the MNI grid
  fmri-pain permute OUT MAP ... --mask MASK   permutation inference on any maps (max-t,
                                              TFCE, cluster extent/mass), like randomise

Run `fmri-pain COMMAND --help` or `fmri-pain BIDS_DIR OUTPUT_DIR participant --help`.
"""

_COMMANDS = ("simulate", "demo", "atlas", "permute")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fmri-pain`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_DESCRIPTION)
        return 0 if argv else 2
    if version_requested(argv):  # anywhere, like argparse's version action, but before any check
        print(f"fmri-pain {__version__}")
        return 0
    args = None
    try:
        if argv[0] in _COMMANDS:
            args = _command_parser(argv[0]).parse_args(argv[1:])
            args.command_line = "fmri-pain " + " ".join(argv)
            _setup_logging(getattr(args, "verbose", 0) - getattr(args, "quiet", 0))
            return {"simulate": _simulate, "demo": _demo, "atlas": _atlas,
                    "permute": _permute}[argv[0]](args)
        args = _bids_app_parser().parse_args(argv)
        args.command_line = "fmri-pain " + " ".join(argv)
        _setup_logging(args.verbose - args.quiet)
        code = _bids_app(args)
        _say_hidden_repeats()
        return code
    except (SpecError, InputError) as exc:
        print(f"fmri-pain: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fmri-pain: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 -- the last guard: a line for the user, the traceback to a file
        log = _save_traceback(getattr(args, "output_dir", None))
        text = (str(exc).strip().splitlines() or [""])[0][:300]
        where = f"; traceback in {log}" if log else ""
        print(f"fmri-pain: unexpected error: {type(exc).__name__}: {text}{where}", file=sys.stderr)
        return 1


def _save_traceback(output_dir: Path | None) -> Path | None:
    """Write the current exception's traceback to OUTPUT_DIR/logs (else the temp folder)."""
    import tempfile
    import traceback

    text = traceback.format_exc()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folders = [Path(output_dir) / "logs"] if output_dir is not None else []
    for folder in folders + [Path(tempfile.gettempdir())]:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"fmri-pain_error_{stamp}_{os.getpid()}.log"
            path.write_text(text, encoding="utf-8")
            return path
        except OSError:
            continue
    return None


def _bids_app_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fmri-pain", description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bids_dir", type=Path, help="the raw BIDS dataset of the trial")
    parser.add_argument("output_dir", type=Path, help="where derivatives are written")
    parser.add_argument("analysis_level", choices=["participant", "group"],
                        help="participant: per-subject stages; group: group models")
    parser.add_argument("--participant-label", "--participant_label", nargs="+", default=None,
                        metavar="LABEL", help="subjects to analyse (with or without 'sub-')")
    parser.add_argument("--derivatives", type=Path, default=None, metavar="DIR",
                        help="fMRIPrep derivatives to start from (skips preprocessing)")
    parser.add_argument("--spec", "--config-file", "--config_file", type=Path, default=None,
                        metavar="FILE",
                        help="analysis spec (YAML/JSON); defaults: pipelines/trial.yaml. "
                             "--config-file is fMRIPrep's name: it takes this spec, not "
                             "fMRIPrep's TOML")
    parser.add_argument("-m", "--model", type=Path, default=None, metavar="FILE",
                        help="a BIDS Stats Model (FitLins' *_smdl.json), validated with bsmschema and "
                             "translated into the analysis spec (instead of --spec; a JSON --spec "
                             "with a 'Nodes' key is read as one too)")
    parser.add_argument("--work-dir", "-w", type=Path, default=None, metavar="DIR",
                        help="Nipype working directory (default: OUTPUT_DIR/../work)")
    parser.add_argument("-V", "--version", action="version", version=f"fmri-pain {__version__}",
                        help="print the version and exit (anywhere on the command line)")
    add_execution_arguments(parser)
    add_fmriprep_arguments(parser)
    return parser


def add_execution_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the execution options (all default to the analysis spec's values)."""
    from fmri_pain.execution.backends import BACKENDS, AddressBackend, describe_schedulers

    g = parser.add_argument_group("execution", "where participant tasks run "
                                  "(defaults: the spec's `execution` section)")
    g.add_argument("--scheduler", metavar="{" + ",".join([*BACKENDS, AddressBackend.name]) + "}",
                   help=describe_schedulers())
    g.add_argument("--n-workers", "--nprocs", "--nthreads", "--n-cpus", "--n_cpus", type=int,
                   dest="n_workers", metavar="N",
                   help="local workers / batch jobs: participant tasks run at once (default: "
                        "machine size). --nprocs/--nthreads/--n-cpus are fMRIPrep's names; unlike "
                        "fMRIPrep, where they cap all threads, up to N x --omp-nthreads "
                        "threads run here")
    g.add_argument("--threads-per-worker", "--omp-nthreads", "--omp_nthreads", type=int,
                   dest="threads_per_worker", metavar="N",
                   help="threads per participant task on local workers and with --scheduler none; "
                        "BLAS/OpenMP threads (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, "
                        "MKL_NUM_THREADS) are pinned to it (batch jobs: --job-cores). "
                        "--omp-nthreads is fMRIPrep's name")
    g.add_argument("--memory", dest="memory_per_worker", help="memory limit per local worker, e.g. 4GiB")
    g.add_argument("--mem", "--mem-mb", "--mem_mb", dest="memory_per_worker", type=parse_memory,
                   metavar="SIZE",
                   help="fMRIPrep's name for --memory, in its units: 8GB, 8000MB, or a plain "
                        "number of MB; here the limit of each local worker, not of the whole run")
    g.add_argument("--retries", type=int, help="retries after infrastructure failures (input errors never)")
    g.add_argument("--queue", help="batch queue / SLURM partition")
    g.add_argument("--account", help="batch account / project")
    g.add_argument("--walltime", help="batch job wall time, e.g. 02:00:00")
    g.add_argument("--job-cores", type=int, help="cores per batch job (one worker per job)")
    g.add_argument("--job-memory", help="memory per batch job, e.g. 8GiB")
    g.add_argument("--job-extra", dest="job_extra_directives", action="append", metavar="DIRECTIVE",
                   help="extra batch directive, repeatable (e.g. --job-extra=--gres=gpu:0)")
    g.add_argument("--max-jobs", type=int, help="maximum concurrent batch jobs")
    g.add_argument("--worker-python", help="python command of batch workers, "
                                           "e.g. 'apptainer exec fmri-pain.sif python'")
    g.add_argument("--force", action="store_true", default=False,
                   help="re-run subjects whose outputs are up to date")
    g.add_argument("-v", "--verbose", action="count", default=0,
                   help="our log lines and per-subject and per-stage lines; -vv adds the "
                        "libraries' log lines (dask, distributed, nipype), -vvv debug lines "
                        "(default: progress, warnings and the final summary)")
    g.add_argument("-q", "--quiet", action="count", default=0,
                   help="no progress; only failures and errors")


_ARG_FIELDS = ("scheduler", "n_workers", "threads_per_worker", "memory_per_worker", "retries",
               "queue", "account", "walltime", "job_cores", "job_memory",
               "job_extra_directives", "max_jobs", "worker_python")


def verbosity_from_args(args: argparse.Namespace) -> int:
    """0 quiet, 1 progress (default), 2 verbose (-v), 3 libraries' logs too (-vv), from the counts."""
    return 1 + int(getattr(args, "verbose", 0) or 0) - int(getattr(args, "quiet", 0) or 0)


def execution_spec_from_args(spec: AnalysisSpec, args: argparse.Namespace) -> AnalysisSpec:
    """``spec`` with the execution options given on the command line applied (validated)."""
    from fmri_pain.execution.backends import validate_scheduler

    changes = {name: getattr(args, name) for name in _ARG_FIELDS
               if getattr(args, name, None) is not None}
    if "scheduler" in changes:
        changes["scheduler"] = validate_scheduler(changes["scheduler"])
    if "job_extra_directives" in changes:
        changes["job_extra_directives"] = list(changes["job_extra_directives"])
    for name in ("n_workers", "threads_per_worker", "job_cores", "max_jobs"):
        if name in changes and changes[name] < 1:
            raise SpecError(f"--{name.replace('_', '-')} must be at least 1, got {changes[name]}")
    if "retries" in changes and changes["retries"] < 0:
        raise SpecError(f"--retries must be >= 0, got {changes['retries']}")
    if not changes:
        return spec
    execution = {**asdict(spec.execution), **changes}
    return spec.replace(execution=execution)


def _command_parser(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"fmri-pain {command}")
    parser.add_argument("output_dir", type=Path, help="output folder")
    parser.add_argument("-V", "--version", action="version", version=f"fmri-pain {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    parser.add_argument("-q", "--quiet", action="count", default=0)
    if command in ("simulate", "demo"):
        parser.add_argument("--subjects", type=int, default=6 if command == "simulate" else 8,
                            help="number of simulated subjects")
        parser.add_argument("--seed", type=int, default=0, help="random seed (deterministic)")
        parser.add_argument("--volumes", type=int, default=100 if command == "simulate" else 200,
                            help="volumes per run (TR 2 s)")
        parser.add_argument("--voxel-size", type=float, default=4.0, help="voxel size in mm")
    if command == "simulate":
        parser.description = ("Write a simulated crossover trial: OUT/bids (raw BIDS), "
                              "OUT/derivatives/fmriprep (with --derivatives), OUT/truth.")
        parser.add_argument("--derivatives", action="store_true",
                            help="also write fMRIPrep-style derivatives (in MNI152NLin2009aSym, "
                                 "nilearn's template)")
        parser.add_argument("--null", action="store_true", help="no activation anywhere")
        parser.add_argument("--ppi", action="store_true",
                            help="add a condition-dependent coupling between two nodes")
    if command == "demo":
        parser.description = ("Simulate a small trial into OUT/sourcedata and run the "
                              "participant and group levels into OUT.")
        parser.add_argument("--scheduler", default="local",
                            help="execution back-end for the participant level (default local)")
    if command == "atlas":
        parser.description = "Write the pain-pathway atlas (labels NIfTI, TSV, figure)."
        parser.add_argument("--pain-side", choices=["left", "right"], default="right",
                            help="side of the pain (contralateral nodes flip)")
        parser.add_argument("--voxel-size", type=float, default=2.0, help="grid in mm")
    if command == "permute":
        parser.description = ("Permutation inference on 3-D maps (one per design row): "
                              "max-t FWE, optional TFCE and cluster extent/mass, written "
                              "under OUT/group with the group-level names.")
        parser.add_argument("maps", nargs="+", type=Path, help="the maps, in design-row order")
        parser.add_argument("--mask", type=Path, required=True, help="voxels to test (non-zero)")
        parser.add_argument("--design", type=Path, default=None, metavar="TSV",
                            help="one row per map; numeric columns are regressors "
                                 "(default: one-sample)")
        parser.add_argument("--contrast", default=None,
                            help="a design column, or weights: --contrast=-1,0,1 (F: rows split by ';')")
        parser.add_argument("--blocks", default=None, metavar="COLUMN",
                            help="design column of exchangeability blocks (e.g. subject)")
        parser.add_argument("--name", default=None, help="contrast name in the file names")
        parser.add_argument("--n-perm", type=int, default=5000)
        parser.add_argument("--two-sided", action="store_true")
        parser.add_argument("--tfce", action="store_true")
        parser.add_argument("--cluster-p", type=float, default=None,
                            help="cluster-forming p (uncorrected) for cluster extent/mass")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--n-jobs", type=int, default=1)
        parser.add_argument("--accel", choices=["none", "tail"], default="none",
                            help="tail: FWE p-values from a generalised Pareto fit to the tail of "
                                 "the permutation null (PALM's -accel tail), below 1/n-perm")
        parser.add_argument("--space", default=None, metavar="LABEL",
                            help="template of the maps, for the output names (default: the "
                                 "maps' common space- entity, else none)")
    return parser


def _setup_logging(count: int) -> None:
    """Console logging for ``count`` = number of ``-v`` minus number of ``-q``.

    Warnings always; our INFO from ``-v``; the libraries' (dask, distributed,
    tornado, nipype, pybids) from ``-vv``; DEBUG from ``-vvv``
    (:mod:`fmri_pain.execution.console`).
    """
    from fmri_pain.execution.console import configure_console

    # A handler that cannot write (full disk, closed stream) drops its record
    # instead of printing logging's traceback; the run goes on.
    logging.raiseExceptions = False
    configure_console(1 + count)


def _say_hidden_repeats() -> None:
    from fmri_pain.execution.console import hidden_repeats

    repeats = hidden_repeats()
    if repeats:
        print(f"fmri-pain: {repeats} repeated warning(s) not shown again (-vv shows every one)",
              file=sys.stderr)


def _bids_app(args: argparse.Namespace) -> int:
    from fmri_pain.bids.derivatives import has_own_preprocessing
    from fmri_pain.bids.derivatives import remove_orphaned_temporaries
    from fmri_pain.bids.filters import run_selection
    from fmri_pain.bids.layout import load_layout
    from fmri_pain.bids.output_lock import OutputLock
    from fmri_pain.config.bsm import load_analysis

    try:
        spec, model_name = load_analysis(args.spec, args.model)
    except UnicodeDecodeError as exc:  # the spec loader may already say so itself
        raise SpecError(f"{args.spec}: not UTF-8 text (byte {exc.start})") from exc
    spec = execution_spec_from_args(spec, args)
    selection = run_selection(args.bids_filter_file, args.session_label)
    output_dir = args.output_dir.resolve()
    work_dir = args.work_dir
    if work_dir is None and args.derivatives is None and args.analysis_level == "participant":
        work_dir = output_dir.parent / "work"  # the preprocessing's default (preprocess.run)
    check_output_dir(output_dir, args.bids_dir, args.derivatives, work_dir)
    if args.analysis_level == "group" and not output_dir.is_dir() and not args.boilerplate:
        raise InputError("OUTPUT_DIR does not exist: run `fmri-pain BIDS_DIR OUTPUT_DIR "
                         "participant` first", path=output_dir)
    _prepare_output_dir(output_dir)
    with OutputLock(output_dir, command=args.command_line):
        removed = remove_orphaned_temporaries(output_dir)
        if removed:
            LOGGER.warning("removed %d temporary file(s) left by an interrupted run, e.g. %s",
                           len(removed), removed[0])
        # imported here: a bad spec or OUTPUT_DIR is reported before the analysis stack loads
        from fmri_pain.bids.validator import subject_input_errors
        from fmri_pain.pipeline.participant import validate_bids_input

        report = validate_bids_input(args.bids_dir, skip=args.skip_bids_validation,  # once, first
                                     participant_label=args.participant_label)
        invalid = subject_input_errors(report)  # subjects whose own files the validator rejects
        derivatives = args.derivatives
        if (derivatives is None and args.analysis_level == "group"
                and has_own_preprocessing(output_dir)):
            derivatives = output_dir  # the participant level's own fMRIPrep-named outputs
        layout = load_layout(args.bids_dir, derivatives, spec=spec,
                             participant_label=args.participant_label, selection=selection,
                             check_data=args.analysis_level == "participant" and not args.boilerplate)
        print(layout.summary().to_string())
        if selection.ignored:
            LOGGER.warning("%s: queries %s ignored: fmri-pain reads no such files",
                           selection.source, ", ".join(selection.ignored))
        if selection.active:
            _warn_left_out_outputs(output_dir, layout.runs)
        if args.boilerplate:
            return _boilerplate(layout, spec, output_dir, derivatives is not None,
                                selection.describe() if selection.active else None, invalid)
        if args.analysis_level == "participant":
            return _participant(layout, spec, output_dir, args, invalid)
        return _group(layout, spec, output_dir, invalid, verbosity_from_args(args), model_name)


def _inside(path: Path, folder: Path) -> bool:
    return path != folder and path.is_relative_to(folder)


def _own_outputs(folder: Path) -> bool:
    """Whether ``folder`` is a derivatives dataset this toolkit wrote."""
    import json

    try:
        description = json.loads((folder / "dataset_description.json").read_text(encoding="utf-8"))
        return any(g.get("Name") == "fmri-pain" for g in description.get("GeneratedBy", []))
    except (OSError, ValueError, AttributeError, TypeError):
        return False


def check_output_dir(output_dir: Path, bids_dir: Path, derivatives: Path | None = None,
                     work_dir: Path | None = None) -> None:
    """Refuse an OUTPUT_DIR that would write into an input dataset.

    OUTPUT_DIR may not be BIDS_DIR or inside it, except under
    ``BIDS_DIR/derivatives/`` (where BIDS puts derivatives); nor the
    ``--derivatives`` folder or inside it, unless that folder is this
    toolkit's own output. A ``--work-dir`` inside an input dataset is
    allowed with a warning.

    Raises
    ------
    InputError
        Naming the folder at fault.
    """
    output, bids = output_dir.resolve(), bids_dir.resolve()
    if output == bids:
        raise InputError("OUTPUT_DIR must differ from BIDS_DIR (the raw dataset would be "
                         "written into); use e.g. BIDS_DIR/derivatives/fmri-pain", path=output)
    if _inside(output, bids) and not _inside(output, bids / "derivatives"):
        raise InputError(f"OUTPUT_DIR is inside the raw dataset {bids}; only "
                         f"BIDS_DIR/derivatives/<name> is allowed there", path=output)
    deriv = derivatives.resolve() if derivatives is not None else None
    if deriv is not None and (output == deriv or _inside(output, deriv)) and not _own_outputs(deriv):
        where = "is" if output == deriv else "is inside"
        raise InputError(f"OUTPUT_DIR {where} the --derivatives folder {deriv}, which would be "
                         f"written into; choose another OUTPUT_DIR", path=output)
    if work_dir is not None:
        work = work_dir.resolve()
        for name, folder in (("the raw dataset", bids), ("the --derivatives folder", deriv)):
            if folder is not None and (work == folder or _inside(work, folder)):
                LOGGER.warning("the work folder %s (--work-dir) is inside %s %s: Nipype will "
                               "write its working files there", work, name, folder)


def _remove_lock_only_folder(folder: Path) -> None:
    """Remove ``folder`` if it holds nothing but the run lock's files."""
    from fmri_pain.bids.output_lock import LOCK_NAME

    lock_files = {LOCK_NAME, f"{LOCK_NAME}.guard"}
    try:
        entries = list(folder.iterdir())
        if all(e.name in lock_files and e.is_file() for e in entries):
            for entry in entries:
                entry.unlink()
            folder.rmdir()
    except OSError:
        pass


def _prepare_output_dir(output_dir: Path) -> None:
    """Create OUTPUT_DIR and check it can be written into (one clear line when not)."""
    import tempfile

    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir):
            pass
    except OSError as exc:
        raise InputError(f"OUTPUT_DIR cannot be written into: {exc.strerror or exc}",
                         path=output_dir) from exc


def _participant(layout, spec, output_dir: Path, args: argparse.Namespace,
                 invalid: dict | None = None) -> int:
    """The participant level; subjects in ``invalid`` (the BIDS validator's) fail unrun: exit code 2."""
    from fmri_pain.bids.derivatives import write_dataset_description
    from fmri_pain.pipeline.participant import run_participant_level

    invalid = invalid or {}
    write_dataset_description(output_dir, layout.bids_dir, args.derivatives)
    write_dataset_notes(output_dir, layout)
    for error in layout.errors:
        LOGGER.error("%s", error)
    # A subject the validator rejects is not run: with no runs, the runner reports it failed
    # with its errors (the validator's first, then fmri-pain's own).
    runs_by_subject = {s: layout.runs_for(s) for s in layout.subjects if s not in invalid}
    input_errors = {s: [*invalid.get(s, []), *layout.failed_subjects.get(s, [])]
                    for s in {**layout.failed_subjects, **invalid}}
    summary = run_participant_level(runs_by_subject, spec, output_dir, work_dir=args.work_dir,
                                    force=args.force, verbosity=verbosity_from_args(args),
                                    input_errors=input_errors, notes=layout.notes,
                                    stop_on_first_failure=args.stop_on_first_crash)
    if invalid:
        return 2  # bad input, as when the whole run stops on it
    return summary.exit_code or (1 if layout.errors else 0)


def _warn_left_out_outputs(output_dir: Path, runs) -> None:
    from fmri_pain.bids.filters import left_out_session_outputs

    stale = left_out_session_outputs(output_dir, runs)
    if stale:
        LOGGER.warning("OUTPUT_DIR holds maps of %d session(s) this selection leaves out (e.g. %s); "
                       "they and the subject-level maps an earlier run made from them stay, and the "
                       "group level reads the latter: use a fresh OUTPUT_DIR", len(stale), stale[0])


def _boilerplate(layout, spec, output_dir: Path, derivatives: bool, selection: str | None,
                 invalid: dict | None = None) -> int:
    """``--boilerplate``: the planned methods text and citations under OUTPUT_DIR/logs, nothing else."""
    from fmri_pain.report.methods import write_citation_files
    from fmri_pain.report.planned_methods import PLANNED_TITLE, planned_boilerplate

    invalid = invalid or {}
    for error in [e for errors in invalid.values() for e in errors] + layout.errors:
        LOGGER.warning("left out of the boilerplate: %s", error)
    runs = [r for r in layout.runs if r.subject not in invalid]
    if not runs:
        raise InputError("no valid run to describe", path=layout.bids_dir)
    sections = planned_boilerplate(runs, spec, trial_mode=layout.mode == "trial",
                                   derivatives=derivatives, selection=selection)
    written = write_citation_files(output_dir / "logs", sections, title=PLANNED_TITLE)
    print(f"boilerplate (nothing was analysed): {written['md']}, {written['bib']}")
    return 0


def write_dataset_notes(output_dir: Path, layout) -> Path | None:
    """``OUTPUT_DIR/logs/dataset_notes.tsv``: drop-outs and ignored files, for the reports.

    Written only when its content changes; removed when there is nothing to note.
    """
    from fmri_pain.bids.derivatives import write_text_if_changed

    path = output_dir / "logs" / "dataset_notes.tsv"
    table = layout.notes_table()
    if table.empty:
        path.unlink(missing_ok=True)
        return None
    write_text_if_changed(table.to_csv(sep="\t", index=False, na_rep="n/a"), path)
    return path


def _group(layout, spec, output_dir: Path, invalid: dict | None = None, verbosity: int = 1,
           model_name: str | None = None) -> int:
    """The group level; subjects in ``invalid`` (the BIDS validator's) are left out, each warned of."""
    from fmri_pain.pipeline.group import left_out_reasons, run_group_level

    invalid = invalid or {}
    write_dataset_notes(output_dir, layout)
    for note in layout.notes:
        who = f"sub-{note['subject']} " if note["subject"] else ""
        where = f" [{note['path']}]" if note["path"] else ""
        print(f"note: {who}{note['kind']}: {note['message']}{where}")
    runs = [r for r in layout.runs if r.subject not in invalid]
    result = run_group_level(output_dir, runs, spec, excluded=left_out_reasons(invalid), verbosity=verbosity,
                             model_name=model_name)
    if result.left_out:
        print(f"group level left out (no participant outputs): {', '.join(result.left_out)}")
    if result.group.warnings:
        print(f"group level: {len(result.group.warnings)} warning(s) about the subjects and models "
              f"(listed in the log above and in {result.report.name}):")
        for warning in result.group.warnings:
            print(f"  - {warning}")
    if verbosity >= 1:
        stages = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in result.timings.items())
        where = f"; stage log: {result.stage_log}" if result.stage_log else ""
        print(f"group level stages: {stages}{where}")
    print(f"group report: {result.report}")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from fmri_pain.simulate.dataset import simulate_trial

    _prepare_output_dir(args.output_dir.resolve())
    start = time.perf_counter()
    sim = simulate_trial(args.output_dir, n_subjects=args.subjects, seed=args.seed,
                         voxel_size=args.voxel_size, n_volumes=args.volumes,
                         derivatives=args.derivatives, null=args.null, ppi=args.ppi)
    print(f"simulated {args.subjects} subjects in {time.perf_counter() - start:.1f} s")
    print(f"  raw BIDS:    {sim.bids_dir}")
    if sim.derivatives_dir:
        print(f"  derivatives: {sim.derivatives_dir}")
    print(f"  truth:       {sim.truth_dir}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from fmri_pain.pipeline.demo import run_demo
    from fmri_pain.bids.output_lock import OutputLock

    _prepare_output_dir(args.output_dir.resolve())
    with OutputLock(args.output_dir.resolve(), command=args.command_line):
        return run_demo(args.output_dir, n_subjects=args.subjects, seed=args.seed,
                        n_volumes=args.volumes, voxel_size=args.voxel_size,
                        scheduler=args.scheduler)


def _atlas(args: argparse.Namespace) -> int:
    from nilearn.datasets import load_mni152_template

    from fmri_pain.pathways import write_atlas

    _prepare_output_dir(args.output_dir.resolve())
    grid = load_mni152_template(resolution=args.voxel_size)
    paths = write_atlas(args.output_dir, grid, pain_side=args.pain_side)
    for kind, path in paths.items():
        print(f"  {kind}: {path}")
    return 0


def _permute(args: argparse.Namespace) -> int:
    from fmri_pain.pipeline.permute import permute_maps

    from fmri_pain.bids.output_lock import OutputLock

    if args.n_perm < 1:
        raise InputError("--n-perm must be at least 1")
    written_into = args.output_dir.resolve() / "group"  # permute_maps writes OUT/group/...
    for path in [*args.maps, args.mask, args.design]:
        if path is not None and (path.resolve() == written_into
                                 or path.resolve().is_relative_to(written_into)):
            raise InputError(f"input is inside {written_into}, where permute writes its maps; "
                             f"choose another OUT", path=path)
    out = args.output_dir.resolve()
    created = not out.exists()
    _prepare_output_dir(out)
    try:
        with OutputLock(out, command=args.command_line):
            result, written = permute_maps(
                args.maps, args.mask, args.output_dir, design=args.design, contrast=args.contrast,
                blocks=args.blocks, name=args.name, n_perm=args.n_perm, two_sided=args.two_sided,
                tfce=args.tfce, cluster_threshold=args.cluster_p, seed=args.seed,
                n_jobs=args.n_jobs, space=args.space, accel=args.accel)
    except BaseException:
        if created:  # refused inputs leave no OUT behind (it held nothing but the lock's files)
            _remove_lock_only_folder(out)
        raise
    summary = result.summary()
    used = (f"all {summary['n_rearrangements']} distinct rearrangements (exhaustive)"
            if summary["exhaustive"] else f"{summary['n_perm']} rearrangements")
    print(f"{summary['scheme']}, {used}, smallest attainable p {summary['min_p']:.3g}: "
          f"max {summary['stat_type']} "
          f"{summary['max_stat']:.3f}, FWE threshold {summary['fwe_threshold']:.3f}, "
          f"{summary['n_voxels_fwe']} voxels FWE p < 0.05")
    for key, path in written.items():
        print(f"  {key}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
