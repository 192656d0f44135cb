"""The paper's TRPO outer step (a helper is writing this module)."""
