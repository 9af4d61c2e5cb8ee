"""`metric(...)`: wake an agent when a number leaves its bounds, from Prometheus, SQL or code.

The number comes from a source; the alert state machine (`_alerting`) decides.
Sources: `prometheus(query, url=)` (instant query over the HTTP API),
`sql(query, db_url=)` (a scalar), or any callable returning a number.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Literal, Never, Protocol

import httpx
import sqlalchemy as sa
from pydantic import SecretStr

from agents import AgentSpec, Event, MetricAlert
from agents.location import caller_location
from agents.options import as_timedelta, check_choice
from triggers._alerting import AlertTrigger, Bounds, Policy, bounds_from
from triggers._common import check_common, collects, fail, field_check, reject_unknown, source_check
from triggers.abc import Overlap, TriggerSpec, declare
from triggers.sources import (
    Reading,
    SourceDefaults,
    SourceError,
    check_number,
    engine_for,
    poll_interval,
    secret_url,
    shown_url,
)

Reducer = Literal["max", "min", "sum", "avg", "count"]
_REDUCERS: dict[str, Callable[[list[float]], float]] = {
    "max": max,
    "min": min,
    "sum": sum,
    "avg": lambda v: sum(v) / len(v),
    "count": len,
}


class MetricSource(Protocol):
    """Where a metric's value comes from. `read` returns None for "no data"."""

    def read(self, defaults: SourceDefaults) -> float | None: ...

    def describe(self) -> dict[str, Any]: ...

    def fingerprint(self) -> str: ...


class PrometheusSource:
    """An instant query against Prometheus's HTTP API (`/api/v1/query`)."""

    def __init__(self, query: str, url: SecretStr, reduce: Reducer | None, timeout: timedelta) -> None:
        self.query = query
        self.url = url
        self.reduce = reduce
        self.timeout = timeout

    def fingerprint(self) -> str:
        return f"prometheus:{self.query}|{self.reduce}"

    def describe(self) -> dict[str, Any]:
        return {
            "source": "prometheus",
            "query": self.query,
            "url": shown_url(self.url, ""),
            "reduce": self.reduce,
        }

    def read(self, defaults: SourceDefaults) -> float | None:
        base = self.url.get_secret_value().rstrip("/")
        response = httpx.get(
            f"{base}/api/v1/query", params={"query": self.query}, timeout=self.timeout.total_seconds()
        )
        try:
            body = response.json()
        except ValueError:
            raise SourceError(f"Prometheus answered HTTP {response.status_code} without JSON") from None
        return self.value_of(body, response.status_code)

    def value_of(self, body: object, status_code: int = 200) -> float | None:
        """The reading in an `/api/v1/query` answer; anything but the documented shape is a
        SourceError saying what came back (a proxy's error page, another API, a bad sample).

        A sample of NaN (Prometheus's 0/0) is "no data"; +Inf and -Inf are readings.
        """
        if not isinstance(body, dict):
            raise SourceError(
                f"Prometheus answered HTTP {status_code} with JSON that is not an "
                f"object ({type(body).__name__}); is url= the Prometheus server?"
            )
        if body.get("status") != "success":
            raise SourceError(
                f"Prometheus rejected the query: {body.get('errorType', '')} {body.get('error', status_code)}"
            )
        data = body.get("data")
        if not isinstance(data, dict) or "resultType" not in data or "result" not in data:
            raise SourceError(
                "Prometheus answered without data.resultType and data.result; "
                "is url= the Prometheus server (not a proxy or another API)?"
            )
        kind, result = data["resultType"], data["result"]
        if kind == "scalar":
            return check_number(_sample_value(result), "the query")
        if kind != "vector":
            raise SourceError(f"the query returned a {kind}; use an instant vector or a scalar")
        if not isinstance(result, list):
            raise SourceError(f"Prometheus answered a vector that is not a list: {result!r:.80}")
        if len(result) > 1 and self.reduce is None:
            raise SourceError(
                f"the query returned {len(result)} series; aggregate it in PromQL "
                "(sum(...), max(...)) or pass reduce='max'"
            )
        values = [
            check_number(
                _sample_value(sample.get("value") if isinstance(sample, dict) else None), "the query"
            )
            for sample in result
        ]
        numbers = [v for v in values if v is not None]
        if not numbers:
            return None
        return numbers[0] if len(numbers) == 1 else float(_REDUCERS[self.reduce or "max"](numbers))


def _sample_value(pair: object) -> object:
    """The value of a Prometheus `[<unix time>, "<value>"]` pair; it comes as a string."""
    if not isinstance(pair, list) or len(pair) != 2 or not isinstance(pair[1], str):
        raise SourceError(f'Prometheus answered a sample that is not [time, "value"]: {pair!r:.80}')
    return pair[1]


class SqlSource:
    """A scalar query: `SELECT count(*) FROM jobs WHERE status = 'failed'`."""

    def __init__(self, query: str, db_url: SecretStr | None, params: Mapping[str, Any]) -> None:
        self.query = query
        self.db_url = db_url
        self.params = dict(params)

    def fingerprint(self) -> str:
        return f"sql:{self.query}"

    def describe(self) -> dict[str, Any]:
        return {
            "source": "sql",
            "query": self.query,
            "db_url": shown_url(self.db_url, "(nightowl's database)"),
        }

    def read(self, defaults: SourceDefaults) -> float | None:
        url = self.db_url.get_secret_value() if self.db_url else defaults.database_url
        if not url:
            raise SourceError("no database: pass db_url= to sql() or set NIGHTOWL_DATABASE_URL")
        with engine_for(url).connect() as conn:
            return check_number(conn.execute(sa.text(self.query), self.params).scalar(), "the query")


class CallableSource:
    """Any function returning a number (or None for no data)."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.label = callable_label(fn)

    def fingerprint(self) -> str:
        return f"callable:{self.label}"

    def describe(self) -> dict[str, Any]:
        return {"source": "callable", "callable": self.label}

    def read(self, defaults: SourceDefaults) -> float | None:
        return check_number(self.fn(), self.label)


def callable_label(fn: object) -> str:
    """A stable name for a callable source (its fingerprint must survive a restart)."""
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    module = getattr(fn, "__module__", None) or type(fn).__module__
    return f"{module}.{qualname}"


def prometheus(
    query: str,
    *,
    url: str | SecretStr,
    reduce: Reducer | None = None,
    timeout: timedelta | float = timedelta(seconds=10),
) -> PrometheusSource:
    """A PromQL instant query as a metric source: `prometheus("sum(rate(x[5m]))", url=...)`."""
    call = f"prometheus({query!r:.60})"

    def check_query() -> str:
        if not isinstance(query, str) or not query.strip():
            raise ValueError(f"got {query!r:.60}, not a PromQL expression")
        return query

    text = source_check(call, "query", "pass a non-empty PromQL string", check_query)

    def check_url() -> SecretStr:
        secret = secret_url(url, "url")
        if secret is None:
            raise ValueError("url= is required")
        return secret

    secret = source_check(call, "url", "pass the server's URL, e.g. 'http://prometheus:9090'", check_url)
    if reduce is not None:
        source_check(
            call,
            "reduce",
            "use one of the listed reducers or None",
            lambda: check_choice(reduce, "reduce", _REDUCERS),
        )
    limit = source_check(
        call,
        "timeout",
        "pass a positive timedelta",
        lambda: as_timedelta(timeout, "timeout", allow_zero=False),
    )
    return PrometheusSource(text, secret, reduce, limit)


def sql(
    query: str, *, db_url: str | SecretStr | None = None, params: Mapping[str, Any] | None = None
) -> SqlSource:
    """A scalar SQL query as a metric source; values are bound through `params`."""
    call = f"sql({query!r:.60})"

    def check_query() -> str:
        if not isinstance(query, str) or not query.strip() or ";" in query.strip().rstrip(";"):
            raise ValueError(f"got {query!r:.60}: query must be one SELECT returning a single value")
        return query

    text = source_check(call, "query", "write one SELECT; bind values through params=", check_query)
    url = source_check(call, "db_url", "pass a SQLAlchemy URL", lambda: secret_url(db_url, "db_url"))

    def check_params() -> dict[str, Any]:
        if params is None:
            return {}
        if not isinstance(params, Mapping) or not all(isinstance(k, str) for k in params):
            raise ValueError(f"got {params!r:.60}, not a mapping of names to values")
        return dict(params)

    bound = source_check(call, "params", "pass a dict like {'status': 'failed'}", check_params)
    return SqlSource(text, url, bound)


class MetricTrigger(AlertTrigger):
    kind = "metric"

    def __init__(
        self,
        source: MetricSource,
        bounds: Bounds,
        policy: Policy,
        *,
        every: timedelta,
        timeout: timedelta,
        empty: Literal["false", "fail"],
    ) -> None:
        super().__init__(bounds, policy, every, timeout)
        self.source = source
        self.empty = empty
        self.guarded = isinstance(source, CallableSource)

    def source_fingerprint(self) -> str:
        return self.source.fingerprint()

    def secrets(self) -> tuple[SecretStr | None, ...]:
        if isinstance(self.source, PrometheusSource):
            return (self.source.url,)
        return (self.source.db_url,) if isinstance(self.source, SqlSource) else ()

    def describe(self) -> dict[str, Any]:
        return {**self.source.describe(), **self.describe_policy(), "empty": self.empty}

    def read(self, now: datetime) -> Reading:
        reading = Reading(self.source.read(self.defaults))
        self.check_empty(reading)
        return reading

    def check_empty(self, reading: Reading) -> None:
        if reading.value is None and self.empty == "fail":
            raise SourceError("the source returned no data (empty='fail'; NaN counts as no data)")

    def event(self, name: str, state: str, since: datetime, reading: Reading) -> Event:
        return MetricAlert(
            name=name, value=reading.value, threshold=self.bounds.threshold, state=state, since=since
        )


def as_source(value: object) -> MetricSource:
    if isinstance(value, PrometheusSource | SqlSource | CallableSource):
        return value
    if callable(value):
        return CallableSource(value)
    raise ValueError(f"got {value!r}; pass prometheus(...), sql(...) or a function returning a number")


_OPTIONS = (
    "above",
    "below",
    "clear_below",
    "clear_above",
    "for_",
    "every",
    "cooldown",
    "on_resolve",
    "empty",
    "overlap",
    "timeout",
)


@collects
def metric(
    source: MetricSource | Callable[[], Any],
    *,
    agent: AgentSpec | str,
    name: str,
    above: float | None = None,
    below: float | None = None,
    clear_below: float | None = None,
    clear_above: float | None = None,
    for_: timedelta | float = 0,
    every: timedelta | float = timedelta(seconds=30),
    cooldown: timedelta | float = timedelta(minutes=5),
    on_resolve: bool = False,
    empty: Literal["false", "fail"] = "false",
    overlap: Overlap = "skip",
    timeout: timedelta | float = timedelta(seconds=10),
    **unknown: Never,  # mypy rejects an unknown option; at run time it gets "did you mean"
) -> TriggerSpec:
    """Run `agent` when a metric crosses a threshold and stays there for `for_`."""
    location = caller_location()
    call = f"metric(name={name!r})"
    reject_unknown(location, call, unknown, ("source", "agent", "name", *_OPTIONS))
    trigger_name, agent_ref, policy = check_common(location, call, name, agent, overlap)
    src = field_check(
        location, call, "source", "pass prometheus(...), sql(...) or a callable", lambda: as_source(source)
    )
    bounds = field_check(
        location,
        call,
        "above",
        "give above= (or below=) and a clear bound on the safe side of it",
        lambda: bounds_from(above, below, clear_below, clear_above),
    )
    alert_policy = alert_policy_from(location, call, for_, cooldown, on_resolve)
    interval = field_check(location, call, "every", "pass a positive timedelta", lambda: poll_interval(every))
    limit = field_check(
        location,
        call,
        "timeout",
        "pass a positive timedelta",
        lambda: as_timedelta(timeout, "timeout", allow_zero=False),
    )
    mode = field_check(
        location,
        call,
        "empty",
        "use 'false' or 'fail'",
        lambda: check_choice(empty, "empty", ("false", "fail")),
    )
    trigger = MetricTrigger(src, bounds, alert_policy, every=interval, timeout=limit, empty=mode)  # type: ignore[arg-type]
    return declare(TriggerSpec(trigger_name, agent_ref, policy, location, trigger))


def alert_policy_from(location: Any, call: str, for_: object, cooldown: object, on_resolve: object) -> Policy:
    """The shared `for_`/`cooldown`/`on_resolve` checks of metric and queue_depth."""
    hold = field_check(location, call, "for_", "pass a timedelta", lambda: as_timedelta(for_, "for_"))
    wait = field_check(
        location, call, "cooldown", "pass a timedelta", lambda: as_timedelta(cooldown, "cooldown")
    )
    if not isinstance(on_resolve, bool):
        raise fail(location, call, "on_resolve", f"got {on_resolve!r}", "pass True or False")
    return Policy(hold, wait, on_resolve)
