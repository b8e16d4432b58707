"""The service layer: every front (CLI, API, UI) calls into here and nothing else."""
