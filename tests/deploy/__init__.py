"""Deploy tier: compose file, Dockerfile, Prometheus config and the docs' runnable examples."""
