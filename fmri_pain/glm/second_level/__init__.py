"""Second level: subject maps collected and checked, crossover group designs and fits, parametric
thresholds, the group maps written (``collect``, ``models``, ``thresholds``, ``outputs``, ``fit``)."""
