"""fmri-pain: fMRI analysis of a SCS / DRGS / DUAL crossover trial in neuropathic pain."""

__version__ = "0.1.0"
