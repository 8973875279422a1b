"""General linear models: the first level (runs -> subject maps), the second level (crossover group models) and inference."""
