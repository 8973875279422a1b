"""BIDS in and out: the Run record, reading raw BIDS and fMRIPrep derivatives, derivative names and writes."""
