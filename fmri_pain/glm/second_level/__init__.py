"""Second level: crossover group designs, their fits and parametric thresholds."""
