"""Load trigger modules into a `Registry`, reporting every problem with file:line and a fix."""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from types import ModuleType

from agents import AgentSpec, NightowlError
from agents._spec import declared_agents
from agents._spec import forget_module as forget_agents
from triggers._common import collecting
from triggers.abc import TriggerError, TriggerSpec, declared_triggers
from triggers.abc import forget_module as forget_triggers
from triggers.urls import SourceDefaults


class RegistryLoadError(TriggerError):
    """One or more trigger modules are invalid; `problems` lists each one."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class Registry:
    """Every agent and trigger the configured modules declare, by name."""

    modules: tuple[str, ...] = ()
    agents: dict[str, AgentSpec] = field(default_factory=dict)
    triggers: dict[str, TriggerSpec] = field(default_factory=dict)

    def bind_sources(self, defaults: SourceDefaults) -> None:
        """Give polling triggers nightowl's own database and broker as their defaults."""
        for spec in self.triggers.values():
            spec.source.bind(defaults)

    def agent_for(self, trigger: TriggerSpec) -> AgentSpec:
        """The resolved agent of a trigger (the loader checked it exists)."""
        return self.agents[trigger.agent_name]


def split_modules(value: str | Iterable[str] | None) -> list[str]:
    """`a,b` or a list -> module names, blanks dropped."""
    if value is None:
        return []
    parts = value.split(",") if isinstance(value, str) else list(value)
    return [p.strip() for p in parts if p and p.strip()]


def _path_hint(module: str) -> str | None:
    """`my_triggers.py` or `./jobs/my_triggers.py` given where a module name belongs."""
    if not (module.endswith(".py") or "/" in module or "\\" in module):
        return None
    name = module.removesuffix(".py").replace("\\", "/").lstrip("./").replace("/", ".")
    return (
        f"{module!r} is a file path; --triggers and NIGHTOWL_TRIGGERS take a module name. "
        f"Fix: pass --triggers {name} (run from the directory that contains it)"
    )


def _where(exc: BaseException, module: str) -> str:
    """file:line of the innermost frame that is not the import machinery."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<frozen")]
    mine = [f for f in frames if "importlib" not in f.filename]
    frame = (mine or frames)[-1] if (mine or frames) else None
    return f"{frame.filename}:{frame.lineno}" if frame else module


def _import(module: str, problems: list[str]) -> ModuleType | None:
    hint = _path_hint(module)
    if hint is not None:
        problems.append(hint)
        return None
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `celery -A` does: modules next to you import
    fresh = module not in sys.modules
    if fresh:
        forget_agents(module)
        forget_triggers(module)
    collected: list[str] = []
    try:
        with collecting(collected):
            imported = importlib.import_module(module)
        if collected:
            problems.extend(collected)
            sys.modules.pop(module, None)  # imported again (and judged again) next time
        return imported
    except NightowlError as exc:
        problems.extend(collected)
        problems.append(str(exc))
    except SyntaxError as exc:
        problems.append(
            f"{exc.filename}:{exc.lineno}: syntax error: {exc.msg}. Fix: correct the Python syntax"
        )
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            problems.append(
                f"trigger module {module!r} not found (from --triggers / NIGHTOWL_TRIGGERS). "
                "Fix: check the dotted module name and run from the directory that contains it"
            )
        else:
            problems.append(
                f"{_where(exc, module)}: importing {module} failed: {exc}. "
                f"Fix: install the package that provides {exc.name!r}, or correct the import"
            )
    except Exception as exc:
        where = _where(exc, module)
        problems.append(
            f"{where}: importing {module} raised {type(exc).__name__}: {exc}. "
            "Fix: make the module import cleanly"
        )
    return None


def load(modules: str | Iterable[str] | None) -> Registry:  # noqa: C901 (collects every problem in one pass, so validate reports them all at once)
    """Import each module and collect its agents and triggers.

    Raises RegistryLoadError listing every problem, so `triggers validate`
    shows them all at once rather than one per attempt.
    """
    names = split_modules(modules)
    problems: list[str] = []
    agents: dict[str, AgentSpec] = {}
    triggers: dict[str, TriggerSpec] = {}

    def add_agent(spec: AgentSpec) -> None:
        seen = agents.get(spec.name)
        if seen is None:
            agents[spec.name] = spec
        elif seen is not spec and seen.func is not spec.func:
            problems.append(
                f"{spec.location}: @agent({spec.name!r}): field 'name': duplicate agent name, "
                f"first declared at {seen.location}. Fix: give one of them another name"
            )

    for module_name in names:
        module = _import(module_name, problems)
        if module is None:
            continue
        for spec in declared_agents(module_name):
            add_agent(spec)
        for value in vars(module).values():
            if isinstance(value, AgentSpec):
                add_agent(value)
        for trig in declared_triggers(module_name):
            if isinstance(trig.agent, AgentSpec):
                add_agent(trig.agent)
            first = triggers.get(trig.name)
            if first is not None:
                problems.append(
                    f"{trig.location}: {trig.kind}(name={trig.name!r}): field 'name': duplicate "
                    f"trigger name, first declared at {first.location}. Fix: rename one of them"
                )
                continue
            triggers[trig.name] = trig
    for trig in triggers.values():
        if trig.agent_name not in agents:
            known = ", ".join(sorted(agents)) or "none"
            problems.append(
                f"{trig.location}: {trig.kind}(name={trig.name!r}): field 'agent': unknown agent "
                f"{trig.agent_name!r} (known: {known}). Fix: declare it with "
                f"@agent({trig.agent_name!r}) or pass the decorated function"
            )
    if problems:
        raise RegistryLoadError(list(dict.fromkeys(problems)))  # each once
    return Registry(tuple(names), agents, triggers)
