"""The analysis spec: AnalysisSpec and its sections, loaded from YAML/JSON and validated once."""
