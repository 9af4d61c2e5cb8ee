"""Trigger kinds, their pure fire-time and state logic, and the registry loader.

Triggers return firings and new state; they never touch nightowl's storage
or Celery, so each kind can be tested as a pure function of (now, state).

Names are imported on first use (PEP 562), so that a CLI command that only reads the
database, or `import triggers.sources`, does not pay for every trigger kind's imports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agents.lazy import lazy_names

if TYPE_CHECKING:
    from triggers._cron import CronTrigger, cron, cron_key
    from triggers._cronexpr import CronExpr, CronSyntaxError
    from triggers._dbchange import DbChangeTrigger, db_change
    from triggers._metric import MetricTrigger, metric, prometheus, sql
    from triggers._queue import QueueDepthTrigger, queue_depth, redis_list
    from triggers._registry import Registry, RegistryLoadError, load, split_modules
    from triggers.abc import (
        OVERLAP_POLICIES,
        Evaluation,
        Firing,
        MissedGap,
        Overlap,
        PollingTrigger,
        SourceDefinitionError,
        StateVersionError,
        Trigger,
        TriggerDefinitionError,
        TriggerError,
        TriggerSpec,
        TriggerStatus,
        check_state,
    )
    from triggers.sources import SourceDefaults, SourceError, SourceHealth, dispose_engines

_HOME = {
    "CronTrigger": "triggers._cron",
    "cron": "triggers._cron",
    "cron_key": "triggers._cron",
    "CronExpr": "triggers._cronexpr",
    "CronSyntaxError": "triggers._cronexpr",
    "DbChangeTrigger": "triggers._dbchange",
    "db_change": "triggers._dbchange",
    "MetricTrigger": "triggers._metric",
    "metric": "triggers._metric",
    "prometheus": "triggers._metric",
    "sql": "triggers._metric",
    "QueueDepthTrigger": "triggers._queue",
    "queue_depth": "triggers._queue",
    "redis_list": "triggers._queue",
    "Registry": "triggers._registry",
    "RegistryLoadError": "triggers._registry",
    "load": "triggers._registry",
    "split_modules": "triggers._registry",
    "OVERLAP_POLICIES": "triggers.abc",
    "Evaluation": "triggers.abc",
    "Firing": "triggers.abc",
    "MissedGap": "triggers.abc",
    "Overlap": "triggers.abc",
    "PollingTrigger": "triggers.abc",
    "SourceDefinitionError": "triggers.abc",
    "StateVersionError": "triggers.abc",
    "Trigger": "triggers.abc",
    "TriggerDefinitionError": "triggers.abc",
    "TriggerError": "triggers.abc",
    "TriggerSpec": "triggers.abc",
    "TriggerStatus": "triggers.abc",
    "check_state": "triggers.abc",
    "SourceDefaults": "triggers.sources",
    "SourceError": "triggers.sources",
    "SourceHealth": "triggers.sources",
    "dispose_engines": "triggers.sources",
}


__getattr__ = lazy_names(__name__, _HOME, globals())


__all__ = [
    "OVERLAP_POLICIES",
    "CronExpr",
    "CronSyntaxError",
    "CronTrigger",
    "DbChangeTrigger",
    "Evaluation",
    "Firing",
    "MetricTrigger",
    "MissedGap",
    "Overlap",
    "PollingTrigger",
    "QueueDepthTrigger",
    "Registry",
    "RegistryLoadError",
    "SourceDefaults",
    "SourceDefinitionError",
    "SourceError",
    "SourceHealth",
    "StateVersionError",
    "Trigger",
    "TriggerDefinitionError",
    "TriggerError",
    "TriggerSpec",
    "TriggerStatus",
    "check_state",
    "cron",
    "cron_key",
    "db_change",
    "dispose_engines",
    "load",
    "metric",
    "prometheus",
    "queue_depth",
    "redis_list",
    "split_modules",
    "sql",
]
