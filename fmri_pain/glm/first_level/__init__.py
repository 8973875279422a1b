"""First level: run designs, the AR(1) GLM, fixed effects over runs, one subject's orchestration."""
