"""Process tier: real subprocesses (worker, scheduler, CLI, Flower, Prometheus) on real services."""
