"""2-D navigation as one Gymnasium environment (a helper is writing this module)."""
