"""fMRIPrep's confounds-TSV column names that the analysis relies on (pure constants, imports nothing).

A leaf at the bottom of the layers, so the spec's defaults (``config``) and the stages that
read or write confounds (``bids``, ``preprocess``, ``glm``, ``pathways``) share one spelling.
The simulator keeps its own copy on purpose (it imports nothing of the analysis).
"""

MOTION: tuple[str, ...] = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
"""The six rigid-body motion parameters: translations (mm) and rotations (rad)."""

CONNECTIVITY_CONFOUNDS: tuple[str, ...] = MOTION + ("csf", "white_matter")
"""The default nuisance columns of the connectivity models: motion and the mean CSF and
white-matter signals."""
