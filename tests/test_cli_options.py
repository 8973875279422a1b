"""fMRIPrep's vocabulary: memory sizes, ``--version`` anywhere, every alias parsed as the native option."""

import argparse

import pytest
from dask.utils import parse_bytes

from fmri_pain.cli import _bids_app_parser, execution_spec_from_args
from fmri_pain.cli_options import parse_memory, version_requested
from fmri_pain.config.spec import AnalysisSpec

BASE = ["bids", "out", "participant"]


@pytest.mark.parametrize("text, normal, n_bytes", [
    ("8000", "8000MB", 8_000_000_000), ("8GB", "8GB", 8_000_000_000), ("8G", "8GB", 8_000_000_000),
    ("8000MB", "8000MB", 8_000_000_000), ("4GiB", "4GiB", 4 * 2**30), ("4gib", "4GiB", 4 * 2**30),
    ("1.5 TB", "1.5TB", 1_500_000_000_000), ("512k", "512KB", 512_000),
])
def test_memory_sizes_as_fmriprep_reads_them(text, normal, n_bytes):
    assert parse_memory(text) == normal
    assert parse_bytes(normal) == n_bytes  # what the local cluster then receives


@pytest.mark.parametrize("text", ["", "lots", "8 GBB", "-1", "0", "8PB"])
def test_bad_memory_sizes_are_usage_errors(text):
    with pytest.raises(argparse.ArgumentTypeError, match="invalid memory size"):
        parse_memory(text)


def test_version_anywhere_but_after_double_dash():
    assert version_requested(["bids", "out", "participant", "--version"])
    assert version_requested(["permute", "-V"])
    assert not version_requested(["bids", "out", "participant", "--", "--version"])
    assert not version_requested(["bids", "out", "participant", "--verbose"])


@pytest.mark.parametrize("alias, native, value, dest", [
    ("--nprocs", "--n-workers", "3", "n_workers"),
    ("--nthreads", "--n-workers", "3", "n_workers"),
    ("--n-cpus", "--n-workers", "3", "n_workers"),
    ("--omp-nthreads", "--threads-per-worker", "2", "threads_per_worker"),
    ("--mem", "--memory", "6GB", "memory_per_worker"),
    ("--mem-mb", "--memory", "6GB", "memory_per_worker"),
    ("--config-file", "--spec", "my.yaml", "spec"),
    ("--session_label", "--session-label", "scs", "session_label"),
    ("--bids_filter_file", "--bids-filter-file", "f.json", "bids_filter_file"),
])
def test_every_alias_parses_as_the_native_option(alias, native, value, dest):
    parser = _bids_app_parser()
    a, b = parser.parse_args(BASE + [alias, value]), parser.parse_args(BASE + [native, value])
    assert getattr(a, dest) == getattr(b, dest) is not None
    assert vars(a) == vars(b)


def test_plain_megabytes_reach_the_execution_spec():
    args = _bids_app_parser().parse_args(BASE + ["--mem", "6000", "--nprocs", "2", "--omp-nthreads", "3"])
    execution = execution_spec_from_args(AnalysisSpec(), args).execution
    assert (execution.memory_per_worker, execution.n_workers, execution.threads_per_worker) == ("6000MB", 2, 3)


def test_fmriprep_flags_are_accepted_and_change_no_other_option():
    parser = _bids_app_parser()
    plain = vars(parser.parse_args(BASE))
    flagged = vars(parser.parse_args(BASE + ["--notrack", "--skip-bids-validation"]))
    assert flagged["notrack"] and flagged["skip_bids_validation"]
    flags = ("notrack", "skip_bids_validation")
    assert ({k: v for k, v in flagged.items() if k not in flags}
            == {k: v for k, v in plain.items() if k not in flags})
    help_text = parser.format_help()
    for option in ("--nprocs", "--omp-nthreads", "--mem", "--config-file", "--bids-filter-file",
                   "--session-label", "--stop-on-first-crash", "--boilerplate", "--skip-bids-validation",
                   "--notrack", "--version"):
        assert option in help_text
    assert "never sends usage data" in help_text
    assert "do not run the BIDS validator (bids-validator-deno" in " ".join(help_text.split())
