"""Everything that runs: settings, storage, the Celery boundary, services and the CLI.

`scheduler.celery_app` is the Celery app (for `celery -A scheduler.celery_app`).
It is built on first access rather than at import, because building it loads
the user's trigger modules, which most imports of this package never need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celery import Celery

    celery_app: Celery

__all__ = ["celery_app"]


def __getattr__(name: str) -> Any:
    if name == "celery_app":
        from scheduler.worker.app import get_app

        return get_app()
    raise AttributeError(f"module 'scheduler' has no attribute {name!r}")
