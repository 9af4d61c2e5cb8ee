"""Trigger kinds, their pure fire-time and state logic, and the registry loader.

Triggers return firings and new state; they never touch nightowl's storage
or Celery, so each kind can be tested as a pure function of (now, state).
"""

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
