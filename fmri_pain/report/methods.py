"""Methods text generated from the parameters actually used and the software versions."""

from __future__ import annotations

from fmri_pain.derivatives import SPACE, software_versions
from fmri_pain.spec import AnalysisSpec

_CONFOUNDS = {
    "motion24": "the six head-motion parameters with their temporal derivatives and squares (24 regressors)",
    "motion6": "the six head-motion parameters",
    "acompcor": "24 motion regressors and {n} anatomical CompCor components",
    "none": "no confound regressors",
}


def first_level_methods(spec: AnalysisSpec, preprocessed_here: bool = False,
                        space: str | None = None) -> str:
    """Paragraph describing preprocessing input and the run-level GLM.

    ``space``: the template space of the data analysed (default: the spec's, else the project's own).
    """
    fl = spec.first_level
    space = space or spec.space or SPACE
    versions = software_versions()
    conf = _CONFOUNDS[fl.confounds.strategy].format(n=fl.confounds.n_acompcor)
    source = ("were preprocessed with fmri-pain's Nipype workflows (head-motion realignment, "
              "slice-timing correction, co-registration and normalization to "
              f"{space} (nilearn's bundled ICBM 2009a symmetric T1 template) in a single "
              "interpolation)" if preprocessed_here else
              f"were read as fMRIPrep-style derivatives in {space} space")
    smoothing = (f"spatially smoothed with a {fl.smoothing_fwhm:g} mm FWHM Gaussian kernel"
                 if fl.smoothing_fwhm else "not smoothed")
    scrub = (f"; volumes with framewise displacement > {fl.confounds.fd_threshold:g} mm or "
             f"standardised DVARS > {fl.confounds.std_dvars_threshold:g} were censored"
             if fl.confounds.scrub else "")
    drift = ("a cosine drift basis with a high-pass cut-off of "
             f"{1 / fl.high_pass:.0f} s" if fl.drift_model == "cosine" else f"a {fl.drift_model} drift model")
    off = f" versus '{spec.events.off}' blocks" if spec.events.off else " versus the implicit baseline"
    return (
        f"Functional runs {source}. Data were {smoothing}. Each run was modelled with a general "
        f"linear model (nilearn {versions.get('nilearn', '?')}): the '{spec.events.on}' blocks{off} "
        f"convolved with the {fl.hrf_model} haemodynamic response function, other trial types as "
        f"nuisance regressors, {drift}, and {conf}{scrub}. Serial correlations were modelled with "
        f"{'an AR(1)' if fl.noise_model == 'ar1' else 'no (OLS)'} noise model. Runs of a session "
        "were combined by precision-weighted fixed effects; within-subject condition differences "
        "were computed from the per-condition effects with variance equal to the sum of the "
        "squared-weighted variances."
    )


def group_methods(spec: AnalysisSpec) -> str:
    """Paragraph describing the group models and thresholds."""
    g = spec.group
    covs = (f" Covariates ({', '.join(g.covariates)}) were mean-centred." if g.covariates else "")
    if g.flip_to_pain_side != "none":
        covs += (" Maps of patients whose pain was on the "
                 f"{'left' if g.flip_to_pain_side == 'right' else 'right'} were mirrored left-right, "
                 f"so that every patient's pain is on the {g.flip_to_pain_side} and the "
                 f"contralateral hemisphere is the {'left' if g.flip_to_pain_side == 'right' else 'right'}.")
    inference = ""
    if spec.inference.enabled:
        inf = spec.inference
        inference = (
            f" Nonparametric inference used {inf.n_perm} permutations (sign flips for one-sample "
            "and paired designs, permutations within subjects for the repeated-measures model, "
            "Freedman-Lane for nuisance regressors) with max-statistic family-wise error "
            f"control{', TFCE (H = 2, E = 0.5)' if inf.tfce else ''} and cluster-extent/mass "
            f"inference at a cluster-forming p < {inf.cluster_forming_p:g}."
        )
    return (
        "Per condition, subject ON > OFF effects were tested with one-sample t tests. Condition "
        "differences were estimated with the repeated-measures crossover model (condition + "
        "subject + period on all subject x condition maps), with t contrasts for each difference "
        "and an F test across conditions; the paired route (one-sample test of the within-subject "
        "difference maps with the period difference as covariate) is reported alongside." + covs
        + f" Maps were thresholded at FDR q < {g.fdr_q:g} and Bonferroni FWE p < {g.fwe_alpha:g}"
        + (f" with a minimum cluster size of {g.min_cluster_size} voxels" if g.min_cluster_size else "")
        + "; peaks were labelled with the Harvard-Oxford, Juelich and AAL atlases." + inference
    )


def software_sentence() -> str:
    """One line listing the software versions."""
    return "Software: " + ", ".join(f"{k} {v}" for k, v in software_versions().items()) + "."
