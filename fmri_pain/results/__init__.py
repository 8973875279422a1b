"""The analyst API: browse, re-threshold, compare and plot what the pipeline wrote."""

from fmri_pain.bids.naming import parse_bids_name
from fmri_pain.results.api import Results, load_results

__all__ = ["Results", "load_results", "parse_bids_name"]
