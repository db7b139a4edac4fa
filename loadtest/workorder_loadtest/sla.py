"""The SLA gate: thresholds (k6-like syntax), exact statistics over raw samples, and the verdict.

Pure logic, no Locust import, so it is unit-testable and usable on collected data after a run.

Threshold expressions look like k6's: ``"avg<500"``, ``"p(95)<1000"`` (or ``"p95<1000"``),
``"error_rate<0.001"`` (or ``"error_rate<0.1%"``), ``"max<=2s"``, ``"requests>100"``. Times are in
milliseconds unless suffixed ``s``/``ms``. The comparison is what you write; the SLA defaults are
strict ``<`` ("avg < 500 ms" fails at exactly 500 ms).

Targets (what a threshold applies to):
  ``http``   every HTTP request except logins (unless logins are included explicitly)
  ``ws``     every WebSocket entry (request_type ``WS``)
  ``login``  the ``[Auth] Login`` requests
  anything else: a request name as it appears in Locust's stats (``"[Tasks] List"``), optionally
  prefixed by the method (``"POST [Tasks] Claim"``).

Latency statistics (avg, min, max, percentiles) are computed over successful requests only; failed
requests count in the error rate. A business conflict (e.g. a lost claim race, HTTP 409) is a
successful, correctly answered request and is also counted separately as a conflict.

Percentiles are exact: nearest-rank over the raw response times (the value at rank ceil(p/100 * n)
of the sorted samples), at the resolution of the timer (float milliseconds).
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

LOGIN_NAME = "[Auth] Login"
HTTP_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
WS_REQUEST_TYPE = "WS"
AGGREGATE_TARGETS = ("http", "ws", "login")

EXIT_PASS = 0
EXIT_MISS = 1
EXIT_INVALID = 2

TIME_METRICS = ("avg", "min", "max")
RATE_METRICS = ("error_rate", "conflict_rate")
COUNT_METRICS = ("requests", "failures", "conflicts")

_METRIC_ALIASES = {
    "avg": "avg", "mean": "avg",
    "min": "min", "max": "max",
    "med": "p50", "median": "p50",
    "error_rate": "error_rate", "rate": "error_rate", "fail_ratio": "error_rate",
    "failure_rate": "error_rate", "errors": "error_rate",
    "conflict_rate": "conflict_rate",
    "requests": "requests", "count": "requests",
    "failures": "failures", "conflicts": "conflicts",
}
_OPS = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "==": lambda a, b: a == b,
}
_EXPR = re.compile(
    r"^\s*(?P<metric>p\(\s*[0-9.]+\s*\)|p[0-9]+(?:\.[0-9]+)?|[a-z_]+)\s*"
    r"(?P<op><=|>=|==|<|>)\s*"
    r"(?P<value>[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)\s*(?P<unit>ms|s|%)?\s*$"
)


class ThresholdError(ValueError):
    """A threshold expression, flag or file that cannot be understood."""


@dataclass(frozen=True)
class Threshold:
    target: str
    metric: str  # canonical: avg, min, max, pNN, error_rate, conflict_rate, requests, failures, conflicts
    op: str
    value: float  # milliseconds for time metrics, a fraction (0..1) for rates, a count otherwise
    source: str = "default"  # default | file | flag

    @property
    def key(self) -> tuple[str, str]:
        return (self.target, self.metric)

    @property
    def percentile(self) -> float | None:
        return float(self.metric[1:]) if self.metric.startswith("p") else None

    def describe(self) -> str:
        kind = metric_kind(self.metric)
        if kind == "time":
            text = f"{self.value:g}ms"
        elif kind == "rate":
            text = f"{self.value * 100:g}%"
        else:
            text = f"{self.value:g}"
        return f"{self.metric}{self.op}{text}"


def metric_kind(metric: str) -> str:
    if metric in TIME_METRICS or metric.startswith("p"):
        return "time"
    if metric in RATE_METRICS:
        return "rate"
    return "count"


def format_value(metric: str, value: float | None) -> str:
    if value is None:
        return "no data"
    kind = metric_kind(metric)
    if kind == "time":
        return f"{value:.1f} ms" if value < 100_000 else f"{value / 1000:.1f} s"
    if kind == "rate":
        return f"{value * 100:.3f}%"
    return f"{value:g}"


def _canonical_percentile(text: str) -> str:
    number = float(text)
    if not 0 < number <= 100:
        raise ThresholdError(f"percentile must be in (0, 100], got {text}")
    return "p" + (f"{number:g}")


def parse_expression(target: str, expression: str, source: str = "flag") -> Threshold:
    """Parse one k6-like expression such as ``p(95)<1000`` for ``target``."""
    match = _EXPR.match(expression.strip().lower())
    if not match:
        raise ThresholdError(
            f"cannot parse threshold {expression!r} for {target!r}: expected e.g. 'avg<500', "
            "'p(95)<1000', 'error_rate<0.1%'"
        )
    raw_metric, op, raw_value, unit = match["metric"], match["op"], match["value"], match["unit"]
    if raw_metric.startswith("p(") or re.fullmatch(r"p[0-9.]+", raw_metric):
        metric = _canonical_percentile(raw_metric.strip("p()").strip())
    elif raw_metric in _METRIC_ALIASES:
        metric = _METRIC_ALIASES[raw_metric]
    else:
        raise ThresholdError(f"unknown metric {raw_metric!r} in {expression!r}")
    value = float(raw_value)
    kind = metric_kind(metric)
    if kind == "time":
        if unit == "%":
            raise ThresholdError(f"{metric} is a time; use ms or s, not % ({expression!r})")
        if unit == "s":
            value *= 1000.0
    elif kind == "rate":
        if unit in ("ms", "s"):
            raise ThresholdError(f"{metric} is a ratio; write 0.001 or 0.1% ({expression!r})")
        if unit == "%":
            value /= 100.0
        elif value > 1:
            raise ThresholdError(f"{metric} is a ratio in 0..1 (or use %): {expression!r}")
    elif unit:
        raise ThresholdError(f"{metric} is a count and takes no unit ({expression!r})")
    target = target.strip()
    if not target:
        raise ThresholdError(f"empty target for {expression!r}")
    return Threshold(target=target, metric=metric, op=op, value=value, source=source)


def parse_flag(spec: str) -> list[Threshold]:
    """Parse ``--sla "TARGET: EXPR[, EXPR...]"`` (TARGET: http, ws, login or a request name)."""
    target, sep, expressions = spec.rpartition(":")
    if not sep or not target.strip():
        raise ThresholdError(f"--sla expects 'TARGET: EXPR[, EXPR]', e.g. '[Tasks] List: p95<800', got {spec!r}")
    exprs = [e for e in (x.strip() for x in expressions.split(",")) if e]
    if not exprs:
        raise ThresholdError(f"no expression in --sla {spec!r}")
    return [parse_expression(target, e, source="flag") for e in exprs]


def load_file(path: str | Path) -> list[Threshold]:
    """Read thresholds from a TOML file::

        [thresholds]
        http = ["avg<500", "p(95)<1000", "error_rate<0.1%"]
        ws = ["p95<1000"]
        "[Tasks] List" = "p95<800"
    """
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ThresholdError(f"cannot read SLA file {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ThresholdError(f"SLA file {path} is not valid TOML: {exc}") from exc
    unknown = set(data) - {"thresholds"}
    if unknown:
        raise ThresholdError(f"SLA file {path}: unknown top-level keys {sorted(unknown)} (only [thresholds])")
    table = data.get("thresholds", {})
    if not isinstance(table, dict):
        raise ThresholdError(f"SLA file {path}: [thresholds] must be a table")
    result: list[Threshold] = []
    for target, exprs in table.items():
        if isinstance(exprs, str):
            exprs = [exprs]
        if not isinstance(exprs, list) or not all(isinstance(e, str) for e in exprs):
            raise ThresholdError(f"SLA file {path}: {target!r} must be a string or a list of strings")
        result.extend(parse_expression(target, e, source="file") for e in exprs)
    return result


def default_thresholds(avg_ms: float = 500, p95_ms: float = 1000, error_rate: float = 0.001) -> list[Threshold]:
    """The SLA of issue 5 (strict <), plus defaults for WebSocket and login entries."""
    return [
        Threshold("http", "avg", "<", float(avg_ms)),
        Threshold("http", "p95", "<", float(p95_ms)),
        Threshold("http", "error_rate", "<", float(error_rate)),
        Threshold("ws", "p95", "<", 1000.0),
        Threshold("ws", "error_rate", "<", 0.01),
        Threshold("login", "error_rate", "<", 0.001),
    ]


def build_thresholds(
    *,
    file: str | None = None,
    flags: Iterable[str] = (),
    avg_ms: float | None = None,
    p95_ms: float | None = None,
    error_rate: float | None = None,
) -> list[Threshold]:
    """Defaults, then the TOML file, then flags; a later (target, metric) replaces an earlier one."""
    merged: dict[tuple[str, str], Threshold] = {t.key: t for t in default_thresholds()}
    if file:
        for t in load_file(file):
            merged[t.key] = t
    for name, value, metric in (("--sla-avg-ms", avg_ms, "avg"), ("--sla-p95-ms", p95_ms, "p95"),
                                ("--sla-error-rate", error_rate, "error_rate")):
        if value is None:
            continue
        value = float(value)
        if value < 0 or (metric == "error_rate" and value > 1):
            raise ThresholdError(f"{name} out of range: {value}")
        merged[("http", metric)] = Threshold("http", metric, "<", value, source="flag")
    for spec in flags:
        for t in parse_flag(spec):
            merged[t.key] = t
    return list(merged.values())


# --------------------------------------------------------------------------------------------
# Samples and statistics


def classify(request_type: str, name: str) -> str:
    if name == LOGIN_NAME:
        return "login"
    if request_type in HTTP_METHODS:
        return "http"
    if request_type == WS_REQUEST_TYPE:
        return "ws"
    return "other"


@dataclass
class EntrySamples:
    """Everything the gate needs about one (request_type, name): counts and raw success times."""

    request_type: str
    name: str
    requests: int = 0
    failures: int = 0
    conflicts: int = 0
    no_response: int = 0  # failures without any HTTP response (connection refused, timeout, ...)
    times: list[float] = field(default_factory=list)  # ms, successful requests only

    @property
    def kind(self) -> str:
        return classify(self.request_type, self.name)

    def add(self, response_time: float | None, failed: bool, conflict: bool = False, no_response: bool = False):
        self.requests += 1
        if failed:
            self.failures += 1
            if no_response:
                self.no_response += 1
        else:
            if conflict:
                self.conflicts += 1
            if response_time is not None:
                self.times.append(float(response_time))

    def merge(self, other: "EntrySamples") -> None:
        self.requests += other.requests
        self.failures += other.failures
        self.conflicts += other.conflicts
        self.no_response += other.no_response
        self.times.extend(other.times)

    def to_wire(self) -> list:
        return [self.request_type, self.name, self.requests, self.failures, self.conflicts,
                self.no_response, self.times]

    @classmethod
    def from_wire(cls, item: list) -> "EntrySamples":
        rt, name, req, fail, conf, nores, times = item
        return cls(rt, name, int(req), int(fail), int(conf), int(nores), [float(t) for t in times])


def percentile(sorted_times: list[float], p: float) -> float | None:
    """Nearest-rank percentile (exact): the value at rank ceil(p/100 * n), 1-based."""
    if not sorted_times:
        return None
    rank = max(1, math.ceil(p / 100.0 * len(sorted_times) - 1e-9))
    return sorted_times[min(rank, len(sorted_times)) - 1]


@dataclass
class GroupStats:
    label: str
    requests: int = 0
    failures: int = 0
    conflicts: int = 0
    no_response: int = 0
    times: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, label: str, entries: Iterable[EntrySamples]) -> "GroupStats":
        group = cls(label)
        for e in entries:
            group.requests += e.requests
            group.failures += e.failures
            group.conflicts += e.conflicts
            group.no_response += e.no_response
            group.times.extend(e.times)
        group.times.sort()
        return group

    def measure(self, metric: str) -> float | None:
        if metric == "requests":
            return float(self.requests)
        if metric == "failures":
            return float(self.failures)
        if metric == "conflicts":
            return float(self.conflicts)
        if metric == "error_rate":
            return self.failures / self.requests if self.requests else None
        if metric == "conflict_rate":
            return self.conflicts / self.requests if self.requests else None
        if not self.times:
            return None
        if metric == "avg":
            return math.fsum(self.times) / len(self.times)
        if metric == "min":
            return self.times[0]
        if metric == "max":
            return self.times[-1]
        if metric.startswith("p"):
            return percentile(self.times, float(metric[1:]))
        raise ThresholdError(f"unknown metric {metric}")

    def summary(self) -> dict[str, Any]:
        def r(v):
            return None if v is None else round(v, 3)

        return {
            "requests": self.requests,
            "failures": self.failures,
            "conflicts": self.conflicts,
            "no_response": self.no_response,
            "error_rate": r(self.measure("error_rate")),
            "successes_timed": len(self.times),
            "avg_ms": r(self.measure("avg")),
            "min_ms": r(self.measure("min")),
            "p50_ms": r(self.measure("p50")),
            "p90_ms": r(self.measure("p90")),
            "p95_ms": r(self.measure("p95")),
            "p99_ms": r(self.measure("p99")),
            "max_ms": r(self.measure("max")),
        }


def select_entries(target: str, entries: Iterable[EntrySamples], include_login: bool = False) -> list[EntrySamples]:
    entries = list(entries)
    if target == "http":
        return [e for e in entries if e.kind == "http" or (include_login and e.kind == "login")]
    if target == "ws":
        return [e for e in entries if e.kind == "ws"]
    if target == "login":
        return [e for e in entries if e.kind == "login"]
    method, _, rest = target.partition(" ")
    if method in HTTP_METHODS | {WS_REQUEST_TYPE} and rest:
        return [e for e in entries if e.request_type == method and e.name == rest]
    return [e for e in entries if e.name == target]


# --------------------------------------------------------------------------------------------
# The verdict


@dataclass
class RunFacts:
    """What the gate knows about the run besides the samples."""

    exceptions: int = 0  # errors raised in user code (runner.exceptions)
    cpu_warning: bool = False  # a load generator went over 90 % CPU
    setup_errors: dict[str, int] = field(default_factory=dict)
    warnings: dict[str, int] = field(default_factory=dict)


@dataclass
class Row:
    threshold: Threshold
    measured: float | None
    passed: bool | None  # None: skipped (a default threshold on a group without data)
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.threshold.target,
            "metric": self.threshold.metric,
            "threshold": self.threshold.describe(),
            "operator": self.threshold.op,
            "limit": self.threshold.value,
            "measured": None if self.measured is None else round(self.measured, 6),
            "measured_text": format_value(self.threshold.metric, self.measured),
            "result": {True: "pass", False: "FAIL", None: "skip"}[self.passed],
            "source": self.threshold.source,
            "note": self.note,
        }


@dataclass
class Verdict:
    rows: list[Row]
    invalid_reasons: list[str]
    groups: dict[str, GroupStats]
    entries: list[EntrySamples]
    facts: RunFacts

    @property
    def exit_code(self) -> int:
        if self.invalid_reasons:
            return EXIT_INVALID
        if any(r.passed is False for r in self.rows):
            return EXIT_MISS
        return EXIT_PASS

    @property
    def status(self) -> str:
        return {EXIT_PASS: "pass", EXIT_MISS: "fail", EXIT_INVALID: "invalid"}[self.exit_code]

    def as_dict(self) -> dict[str, Any]:
        per_entry = []
        for e in sorted(self.entries, key=lambda x: (x.kind, x.name, x.request_type)):
            stats = GroupStats.of(e.name, [e]).summary()
            per_entry.append({"type": e.request_type, "name": e.name, "kind": e.kind, **stats})
        return {
            "verdict": self.status,
            "exit_code": self.exit_code,
            "invalid_reasons": self.invalid_reasons,
            "thresholds": [r.as_dict() for r in self.rows],
            "groups": {k: g.summary() for k, g in self.groups.items()},
            "entries": per_entry,
            "exceptions": self.facts.exceptions,
            "cpu_warning": self.facts.cpu_warning,
            "setup_errors": self.facts.setup_errors,
            "warnings": self.facts.warnings,
            "percentiles": "exact: nearest-rank over raw response times of successful requests",
        }


def evaluate(
    entries: Iterable[EntrySamples],
    thresholds: Iterable[Threshold],
    facts: RunFacts | None = None,
    include_login: bool = False,
) -> Verdict:
    entries = [e for e in entries]
    facts = facts or RunFacts()
    groups = {t: GroupStats.of(t, select_entries(t, entries, include_login)) for t in AGGREGATE_TARGETS}

    invalid: list[str] = []
    http = groups["http"]
    if http.requests == 0:
        invalid.append("no HTTP requests were made (wrong host? no users started?)")
    elif http.no_response == http.requests:
        invalid.append("the host never answered: every HTTP request failed without a response (host unreachable)")
    login = groups["login"]
    if login.requests and login.no_response == login.requests and http.requests == 0:
        invalid.append("host unreachable: no login request got a response")
    for message, count in sorted(facts.setup_errors.items()):
        invalid.append(f"setup error: {message}" + (f" (x{count})" if count > 1 else ""))
    if facts.exceptions:
        invalid.append(f"{facts.exceptions} exception(s) in the load test's own code (see the exceptions report)")
    if facts.cpu_warning:
        invalid.append("a load generator exceeded 90% CPU: response times are not trustworthy "
                       "(use --processes or fewer users)")

    rows: list[Row] = []
    for t in thresholds:
        group = groups.get(t.target) or GroupStats.of(t.target, select_entries(t.target, entries, include_login))
        measured = group.measure(t.metric)
        if measured is None:
            if t.source == "default":
                rows.append(Row(t, None, None, "no data"))
            else:
                rows.append(Row(t, None, False, "no data for an explicit threshold"))
            continue
        rows.append(Row(t, measured, bool(_OPS[t.op](measured, t.value))))
    return Verdict(rows=rows, invalid_reasons=invalid, groups=groups, entries=entries, facts=facts)


def render_table(verdict: Verdict) -> str:
    """A plain-text table: target, metric, threshold, measured, result; then the verdict."""
    header = ("target", "threshold", "measured", "result")
    lines = [header]
    for r in verdict.rows:
        d = r.as_dict()
        lines.append((d["target"], d["threshold"], d["measured_text"], d["result"]))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    out = ["", "SLA gate (percentiles exact, latency over successful requests; "
               "logins and WebSocket entries are gated separately)"]
    sep = "-+-".join("-" * w for w in widths)
    for i, line in enumerate(lines):
        out.append(" | ".join(str(c).ljust(w) for c, w in zip(line, widths)))
        if i == 0:
            out.append(sep)
    out.append("")
    for label, g in verdict.groups.items():
        s = g.summary()
        out.append(
            f"{label:<5} requests={s['requests']} failures={s['failures']} conflicts={s['conflicts']} "
            f"avg={_fmt_ms(s['avg_ms'])} p50={_fmt_ms(s['p50_ms'])} p95={_fmt_ms(s['p95_ms'])} "
            f"p99={_fmt_ms(s['p99_ms'])} max={_fmt_ms(s['max_ms'])}"
        )
    for message, count in sorted(verdict.facts.warnings.items()):
        out.append(f"warning: {message}" + (f" (x{count})" if count > 1 else ""))
    for reason in verdict.invalid_reasons:
        out.append(f"INVALID RUN: {reason}")
    out.append(f"SLA verdict: {verdict.status.upper()} (exit code {verdict.exit_code})")
    return "\n".join(out) + "\n"


def _fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}ms"
