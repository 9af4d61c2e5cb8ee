"""`python -m scheduler.cli` (used by `nightowl dev` to start its worker)."""

from scheduler.cli import main

main()
