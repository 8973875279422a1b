"""fMRIPrep's command-line vocabulary for the BIDS App: its option names, its memory sizes, ``--version``.

fMRIPrep users type ``--nprocs``, ``--omp-nthreads``, ``--mem``, ``--config-file``,
``--bids-filter-file``, ``--session-label``, ``--stop-on-first-crash``,
``--boilerplate``, ``--skip-bids-validation`` and ``--notrack``. The aliases of
options this package already has are declared next to them in :mod:`fmri_pain.cli`;
this module holds what they need (the memory-size parser, ``--version`` found
anywhere) and the options that are fMRIPrep's own.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from pathlib import Path

_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kKmMgGtT]i?[bB]?|[bB])?\s*$")


def parse_memory(text: str) -> str:
    """A memory size as fMRIPrep's ``--mem`` takes it, in the spec's notation.

    A plain number is megabytes (fMRIPrep's rule: ``--mem 8000`` is 8000 MB);
    otherwise the unit is kept (``8GB``, ``8G``, ``8000MB``, ``4GiB``), as
    dask's ``parse_bytes`` reads it (``G``/``GB`` = 10^9 bytes, ``GiB`` = 2^30).

    Raises
    ------
    argparse.ArgumentTypeError
        For anything else (argparse turns it into a usage error, exit 2).
    """
    match = _SIZE.match(str(text))
    if match is None or float(match[1]) <= 0:
        raise argparse.ArgumentTypeError(
            f"invalid memory size {text!r}: give e.g. 8GB, 8000MB, 4GiB or a number of megabytes")
    number, unit = match[1], match[2]
    if unit is None:
        return f"{number}MB"
    if unit.lower() == "b":
        return f"{number}B"
    binary = "i" if unit[1:2].lower() == "i" else ""
    return f"{number}{unit[0].upper()}{binary}B"


def version_requested(argv: Sequence[str]) -> bool:
    """Whether ``-V``/``--version`` is anywhere on the command line (before a ``--``)."""
    for arg in argv:
        if arg == "--":
            return False
        if arg in ("-V", "--version"):
            return True
    return False


def add_fmriprep_arguments(parser: argparse.ArgumentParser) -> None:
    """Add fMRIPrep's options that have no other home: selection, boilerplate, validation, a no-op."""
    g = parser.add_argument_group(
        "fMRIPrep options", "fMRIPrep's names, with the meaning they have here")
    g.add_argument("--bids-filter-file", "--bids_filter_file", type=Path, default=None,
                   metavar="FILE",
                   help="JSON file of queries, fMRIPrep's format: "
                        "{\"bold\": {\"session\": [\"scs\", \"dual\"], \"run\": 1}, "
                        "\"t1w\": {...}}; the 'bold' query selects the BOLD runs analysed, "
                        "'t1w' the anatomical image; values: a label, a list, null (entity "
                        "absent) or \"*\" (present); exact matches, no regular expressions. "
                        "Queries of files fmri-pain never reads (fmap, sbref, t2w ...) are "
                        "ignored with a warning; anything else is an error. Give the same "
                        "file to the group level, and a fresh OUTPUT_DIR when narrowing an "
                        "earlier selection (maps made from left-out runs are not removed)")
    g.add_argument("--session-label", "--session_label", nargs="+", default=None,
                   metavar="LABEL",
                   help="sessions to analyse (with or without 'ses-'); the others are left "
                        "out, not counted as drop-outs. Give the same labels to the group "
                        "level (and see --bids-filter-file on narrowing a selection)")
    g.add_argument("--stop-on-first-crash", action="store_true", default=False,
                   help="start no further subject after the first one fails (subjects already "
                        "running finish); the summary is still printed and the exit code is 1. "
                        "A subject whose input failed validation counts as a failure, so then "
                        "nothing starts")
    g.add_argument("--boilerplate", "--boilerplate-only", "--boilerplate_only",
                   action="store_true", default=False,
                   help="write only the methods text planned for this spec and dataset "
                        "(OUTPUT_DIR/logs/CITATION.md and CITATION.bib, both levels) and "
                        "exit without analysing anything; the group level writes the methods "
                        "of what actually ran to OUTPUT_DIR/CITATION.md")
    g.add_argument("--skip-bids-validation", "--skip_bids_validation", action="store_true",
                   default=False,
                   help="do not run the BIDS validator (bids-validator-deno, the community's "
                        "schema-based validator) on BIDS_DIR. By default it runs once before "
                        "either level reads the dataset: its errors are listed and its "
                        "warnings logged. Errors of top-level files stop the run (exit code 2), "
                        "as in fMRIPrep; errors only in a subject's own files (sub-XX/) fail "
                        "that subject alone (not run; left out of the group level; exit code "
                        "2 at the end) while the others go on. With "
                        "--participant-label only the problems of those subjects' files and of "
                        "the dataset's top-level files count. fmri-pain's own checks of the "
                        "files it reads always run")
    g.add_argument("--notrack", action="store_true", default=False,
                   help="accepted for fMRIPrep compatibility and changes nothing: fmri-pain "
                        "never sends usage data anywhere")
