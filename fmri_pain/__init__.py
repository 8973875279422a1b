"""fmri-pain: fMRI analysis of a SCS / DRGS / DUAL crossover trial in neuropathic pain.

Analysts start with :func:`load_results`::

    import fmri_pain
    res = fmri_pain.load_results("demo-output")
    res.contrasts, res.map("dualMinusScs"), res.clusters("dualMinusScs")
"""

from fmri_pain._version import __version__

__all__ = ["__version__", "load_results", "Results"]


def __getattr__(name):
    # Lazy: the CLI and workers should not pay for nilearn's plotting imports.
    if name in ("load_results", "Results"):
        from fmri_pain import results

        return getattr(results, name)
    raise AttributeError(f"module 'fmri_pain' has no attribute {name!r}")
