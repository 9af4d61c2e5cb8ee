"""Trigger kinds, their pure fire-time and state logic, and the registry loader.

Triggers return firings and new state; they never touch nightowl's storage
or Celery, so each kind can be tested as a pure function of (now, state).
"""

from triggers._base import (
    OVERLAP_POLICIES,
    Evaluation,
    Firing,
    MissedGap,
    Overlap,
    StateVersionError,
    Trigger,
    TriggerDefinitionError,
    TriggerError,
    TriggerSpec,
    check_state,
)
from triggers._cron import CronTrigger, cron, cron_key
from triggers._cronexpr import CronExpr, CronSyntaxError
from triggers._dbchange import DbChangeTrigger, db_change
from triggers._polling import SourceDefaults, SourceError, dispose_engines
from triggers._registry import Registry, RegistryLoadError, load, split_modules

__all__ = [
    "OVERLAP_POLICIES",
    "CronExpr",
    "CronSyntaxError",
    "CronTrigger",
    "DbChangeTrigger",
    "Evaluation",
    "Firing",
    "MissedGap",
    "Overlap",
    "Registry",
    "RegistryLoadError",
    "SourceDefaults",
    "SourceError",
    "StateVersionError",
    "Trigger",
    "TriggerDefinitionError",
    "TriggerError",
    "TriggerSpec",
    "check_state",
    "cron",
    "cron_key",
    "db_change",
    "dispose_engines",
    "load",
    "split_modules",
]
