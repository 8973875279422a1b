"""Nonparametric inference: the permutation engine, TFCE, cluster measures, maps in and out."""
