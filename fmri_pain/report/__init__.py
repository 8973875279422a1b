"""Reports: HTML templates, figures and methods text; they receive results and compute no analysis."""
