"""BIDS in and out: the Run record, reading raw BIDS and fMRIPrep derivatives, derivative names and writes.

``runs`` (the Run record), ``layout`` (the loader) with ``sessions``, ``fmriprep`` and ``readers``,
``checks`` (validation naming file and subject), ``naming`` (the output naming contract),
``derivatives`` (output paths, atomic writes, provenance), ``nifti``, ``output_lock``.
"""
