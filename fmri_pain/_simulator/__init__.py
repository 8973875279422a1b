"""Private helpers of :mod:`fmri_pain.simulate`.

The simulator deliberately shares no code with the analysis modules of
``fmri_pain`` (it is the independent ground truth they are tested against),
so nothing here imports ``fmri_pain.layout``, ``fmri_pain.glm`` and so on.
"""
