"""First level: runs -> AR(1) GLM -> session / condition fixed effects -> within-subject contrasts.

The model is nilearn's ``FirstLevelModel`` (same design matrix, smoothing, mean
scaling, AR(1) estimate with 100 bins, contrasts), computed with each step done
once. One module per step, in the order of the data:

* :mod:`.events`: ``events.tsv`` and contrast weights over trial types;
* :mod:`.confounds`: the nuisance model (confounds, censoring, ``auto``);
* :mod:`.design`: design matrices, their columns' account, contrast vectors;
* :mod:`.bold`: BOLD read once, streamed in blocks, each volume smoothed in 3D
  (the arithmetic of nilearn's ``smooth_img``) and masked at once;
* :mod:`.model`: the AR(1) GLM on arrays (nilearn's ``run_glm``, vectorised);
* :mod:`.fit`: one run, from files to contrast maps;
* :mod:`.fixed_effects`: combining runs and conditions, on arrays;
* :mod:`.outputs`: statmaps, design files and sidecars;
* :mod:`.subject`: one subject's orchestration.
"""
