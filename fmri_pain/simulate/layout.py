"""Names of the simulated dataset: its task, trial type and template space."""

# The simulated brain is built from nilearn's shipped MNI152 files (ICBM 2009a symmetric, on their
# grid), so its "fMRIPrep-style" derivatives are in that template, not fMRIPrep's 2009cAsym.
SPACE = "MNI152NLin2009aSym"
TEMPLATE_NOTE = ("nilearn's bundled MNI152 files (mni_icbm152_*_tal_nlin_sym_09a: ICBM 2009a "
                 "nonlinear symmetric)")
TASK = "stim"
ON_TRIAL_TYPE = "on"
