"""Nipype interfaces of the preprocessing steps, each a few lines over the step's function.

Every interface is a :class:`~.base.StepInterface`: the node's defined inputs go to one step
function, whose outputs are saved in the node's working directory under the interface's file names
(nipype caches them there, so a re-run reuses finished nodes).  Transforms travel between nodes as
small JSON files (``{"kind", "matrix", "transforms"}``, pull convention, see :mod:`fmri_pain.preprocess.transforms`).
"""
from fmri_pain.preprocess.interfaces.bold import NonSteadyState, Realign, SliceTiming
from fmri_pain.preprocess.interfaces.confounds import Confounds, QualityControl
from fmri_pain.preprocess.interfaces.registration import AnatNormalize, Coregister, ResampleToStd

__all__ = ["AnatNormalize", "Confounds", "Coregister", "NonSteadyState", "QualityControl", "Realign",
           "ResampleToStd", "SliceTiming"]
