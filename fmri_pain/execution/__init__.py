"""Execution of participant-level work: backends (serial, local dask, dask-jobqueue, a scheduler address), runner, task wrapper, resume, progress."""
