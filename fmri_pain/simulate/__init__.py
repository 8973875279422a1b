"""The simulator: a SCS / DRGS / DUAL crossover trial with known ground truth.

It is the independent truth the analysis is tested against, so it shares no code
with the analysis: nothing here imports another ``fmri_pain`` subpackage (an
import contract in pyproject.toml keeps it so), and no analysis module imports it.
"""

from fmri_pain.simulate.dataset import SimulatedTrial, simulate_trial

__all__ = ["SimulatedTrial", "simulate_trial"]
