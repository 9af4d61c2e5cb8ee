"""Service tier: a service's step methods (tick, sweep, check, relay) in-process on real services."""
