"""Execution of participant-level work: serial, local dask, dask-jobqueue or a scheduler address; resume and progress."""
