"""The SLA gate (no Locust import): thresholds ``METRIC OP VALUE`` on a target (``http``: HTTP but
logins and retries, ``ws``, ``login``, ``retry``, or a request name), exact statistics, the verdict.
Latency is over answered requests; every HTTP 409 is a business conflict, never a failure. A write
that failed with 502/503/504 or no answer is sent once more with the same Idempotency-Key, named
"<name> (retry)": the first attempt counts in ``http``'s error rate, the retries are group ``retry``
(its failures: what is left after one retry). Percentiles are nearest rank: pN is
the value at rank ceil(N/100 * n), 1-based, of the n sorted times (p95 of 19 samples: the 19th).
Exit codes: 0 every threshold held, 1 one missed, 2 an invalid run (even if all held)."""

from __future__ import annotations

import math
import operator
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from functools import reduce
from typing import Any

EXIT_PASS, EXIT_MISS, EXIT_INVALID = 0, 1, 2
LOGIN_NAME = "[Auth] Login"
WS = "WS"  # request_type of the WebSocket entries
HTTP_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
GROUPS = ("http", "ws", "login", "retry")
RETRY_MARK = " (retry)"  # in the name of a write's second attempt (users/base.py)

KINDS = {"avg": "time", "min": "time", "max": "time", "error_rate": "rate", "conflict_rate": "rate",
         "requests": "count", "failures": "count", "conflicts": "count"}
ALIASES = {"med": "p50", "rate": "error_rate"}  # the only ones
UNITS = {"time": (None, "ms", "s"), "rate": (None, "%"), "count": (None,)}
OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq}
_NUMBER = r"\d+(?:\.\d+)?"
_EXPR = re.compile(rf"(?:p\(\s*(?P<pct>{_NUMBER})\s*\)|p(?P<pct2>{_NUMBER})|(?P<name>[a-z_]+))\s*"
                   rf"(?P<op><=|>=|==|<|>)\s*(?P<value>{_NUMBER}(?:e[-+]?\d+)?)\s*(?P<unit>ms|s|%)?")


class ThresholdError(ValueError):
    """A threshold expression, flag or file that cannot be understood."""


def kind(metric: str) -> str:
    return "time" if metric.startswith("p") else KINDS[metric]


def text(metric: str, value: float | None) -> str:
    if value is None:
        return "no data"
    return {"time": f"{value:.1f} ms", "rate": f"{value * 100:.3f}%"}.get(kind(metric), f"{value:g}")


@dataclass(frozen=True)
class Threshold:
    target: str
    metric: str  # avg, min, max, pN, error_rate, conflict_rate, requests, failures or conflicts
    op: str
    value: float  # ms for times, a ratio 0..1 for rates, else a count
    source: str = "default"  # default | file | flag

    def describe(self) -> str:
        value = {"time": f"{self.value:g}ms", "rate": f"{self.value * 100:g}%"}.get(kind(self.metric))
        return f"{self.metric}{self.op}{value or f'{self.value:g}'}"


def parse_expression(target: str, expression: str, source: str = "flag") -> Threshold:
    """One expression such as ``p(95)<1000``, ``avg<0.5s`` or ``error_rate<0.1%`` for ``target``."""
    match = _EXPR.fullmatch(expression.strip().lower())
    if not match or not target.strip():
        raise ThresholdError(f"cannot parse threshold {target!r}: {expression!r}; "
                             "expected e.g. 'avg<500', 'p(95)<1000', 'error_rate<0.1%'")
    op, value, unit, pct = match["op"], float(match["value"]), match["unit"], match["pct"] or match["pct2"]
    metric = f"p{float(pct):g}" if pct else ALIASES.get(match["name"], match["name"])
    if pct and not 0 < float(pct) <= 100:
        raise ThresholdError(f"percentile must be in (0, 100]: {expression!r}")
    if not pct and match["name"] not in KINDS.keys() | ALIASES.keys():
        raise ThresholdError(f"unknown metric {metric!r} in {expression!r}")
    if unit not in UNITS[kind(metric)] or (kind(metric) == "rate" and unit is None and value > 1):
        raise ThresholdError(f"wrong unit or range in {expression!r} (times: ms or s; rates: 0..1 or %; "
                             "counts: no unit)")
    return Threshold(target.strip(), metric, op, value * {"s": 1000.0, "%": 0.01}.get(unit, 1.0), source)


def parse_flag(spec: str) -> list[Threshold]:
    """``--sla 'TARGET: EXPR[, EXPR]'``, e.g. ``'[Tasks] List: p95<800, avg<300'``."""
    target, sep, expressions = spec.rpartition(":")
    exprs = [e.strip() for e in expressions.split(",") if e.strip()]
    if not sep or not target.strip() or not exprs:
        raise ThresholdError(f"--sla expects 'TARGET: EXPR[, EXPR]', e.g. '[Tasks] List: p95<800', got {spec!r}")
    return [parse_expression(target, e) for e in exprs]


def load_file(path: str) -> list[Threshold]:
    """A TOML file with one table, ``[thresholds]``: ``TARGET = "EXPR"`` or ``TARGET = ["EXPR", ...]``."""
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ThresholdError(f"cannot read SLA file {path}: {exc}") from exc
    if set(data) != {"thresholds"} or not isinstance(data["thresholds"], dict):
        raise ThresholdError(f"SLA file {path}: expected only a [thresholds] table")
    result = []
    for target, exprs in data["thresholds"].items():
        exprs = [exprs] if isinstance(exprs, str) else exprs
        if not isinstance(exprs, list) or not all(isinstance(e, str) for e in exprs):
            raise ThresholdError(f"SLA file {path}: {target!r} must be a string or a list of strings")
        result += [parse_expression(target, e, "file") for e in exprs]
    return result


def build_thresholds(*, file: str | None = None, flags: Iterable[str] = (), avg_ms: float | None = None,
                     p95_ms: float | None = None, error_rate: float | None = None) -> list[Threshold]:
    """Defaults, then the file, then the flags: a later (target, metric) replaces an earlier one."""
    thresholds = [Threshold("http", "avg", "<", 500.0), Threshold("http", "p95", "<", 1000.0),
                  Threshold("http", "error_rate", "<", 0.001), Threshold("ws", "p95", "<", 1000.0),
                  Threshold("ws", "error_rate", "<", 0.01), Threshold("login", "error_rate", "<", 0.001)]
    thresholds += load_file(file) if file else []
    for flag, metric, value, top in (("--sla-avg-ms", "avg", avg_ms, math.inf),
                                     ("--sla-p95-ms", "p95", p95_ms, math.inf),
                                     ("--sla-error-rate", "error_rate", error_rate, 1)):
        if value is not None and not 0 <= value <= top:
            raise ThresholdError(f"{flag} out of range: {value}")
        thresholds += [Threshold("http", metric, "<", float(value), "flag")] if value is not None else []
    thresholds += [t for spec in flags for t in parse_flag(spec)]
    return list({(t.target, t.metric): t for t in thresholds}.values())


def percentile(sorted_times: list[float], p: float) -> float | None:
    """Nearest rank: the value at rank ceil(p/100 * n), 1-based (round() drops float noise)."""
    if not sorted_times:
        return None
    rank = math.ceil(round(p / 100 * len(sorted_times), 9))
    return sorted_times[min(max(rank, 1), len(sorted_times)) - 1]


@dataclass
class Samples:
    """Counts and raw response times (ms, answered requests only) of one entry or group."""

    requests: int = 0
    failures: int = 0
    conflicts: int = 0
    no_response: int = 0  # failures without any HTTP answer (connection refused, timeout)
    times: list[float] = field(default_factory=list)

    def merge(self, other: Samples) -> Samples:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    def measure(self, metric: str) -> float | None:
        if kind(metric) == "count":
            return float(getattr(self, metric))
        if kind(metric) == "rate":
            count = self.failures if metric == "error_rate" else self.conflicts
            return count / self.requests if self.requests else None
        times = sorted(self.times)
        if not times:
            return None
        if metric == "avg":
            return math.fsum(times) / len(times)
        if metric in ("min", "max"):
            return times[0] if metric == "min" else times[-1]
        return percentile(times, float(metric[1:]))

    def summary(self) -> dict[str, Any]:
        figures = {f"{m}_ms": self.measure(m) for m in ("avg", "min", "p50", "p90", "p95", "p99", "max")}
        return {"requests": self.requests, "failures": self.failures, "conflicts": self.conflicts,
                "no_response": self.no_response, "error_rate": self.measure("error_rate"),
                **{k: None if v is None else round(v, 3) for k, v in figures.items()}}


def record(entries: dict[tuple[str, str], Samples], request_type: str, name: str, response_time: float | None,
           failed: bool, status: int | None) -> None:
    """One request into its (request_type, name) entry."""
    entry = entries.setdefault((request_type, name), Samples())
    entry.requests += 1
    if request_type in HTTP_METHODS and status == 409:
        entry.conflicts += 1
    elif failed:
        entry.failures += 1
        entry.no_response += request_type in HTTP_METHODS and not status
        return
    if response_time is not None:
        entry.times.append(float(response_time))


def group_of(request_type: str, name: str, include_login: bool = False) -> str | None:
    if name == LOGIN_NAME and not include_login:
        return "login"
    if request_type in HTTP_METHODS:
        return "retry" if RETRY_MARK in name else "http"
    return "ws" if request_type == WS else None


def select(target: str, entries: dict[tuple[str, str], Samples], include_login: bool = False) -> Samples:
    """The samples a target covers, merged: a group, ``METHOD name`` or a name."""
    method, _, name = target.partition(" ")
    if target in GROUPS:
        keys = [k for k in entries if group_of(*k, include_login) == target]
    elif method in HTTP_METHODS | {WS} and name:
        keys = [k for k in entries if k == (method, name)]
    else:
        keys = [k for k in entries if k[1] == target]
    return reduce(Samples.merge, (entries[k] for k in keys), Samples())


def evaluate(entries: dict[tuple[str, str], Samples], thresholds: Iterable[Threshold], *,
             include_login: bool = False, exceptions: int = 0, cpu_warning: bool = False,
             setup_errors: dict[str, int] | None = None) -> dict[str, Any]:
    """The verdict, as summary.json holds it (the ``run`` section aside)."""
    groups = {name: select(name, entries, include_login) for name in GROUPS}
    reached = Samples().merge(groups["http"]).merge(groups["login"])
    invalid = []
    if not groups["http"].requests:
        invalid.append("no HTTP requests were made (wrong host? no users started?)")
    if reached.requests and reached.no_response == reached.requests:
        invalid.append("host unreachable: no HTTP request got a response")
    invalid += [f"setup error: {m}" + (f" (x{n})" if n > 1 else "") for m, n in sorted((setup_errors or {}).items())]
    if exceptions:
        invalid.append(f"{exceptions} exception(s) in the load test's own code (see the exceptions report)")
    if cpu_warning:
        invalid.append("a load generator exceeded 90% CPU: its response times are not trustworthy (--processes)")
    rows = []
    for t in thresholds:
        measured = select(t.target, entries, include_login).measure(t.metric)
        if measured is None:  # no data: an explicit threshold fails, a default one is skipped
            result = "skip" if t.source == "default" else "FAIL"
        else:
            result = "pass" if OPS[t.op](measured, t.value) else "FAIL"
        rows.append({"target": t.target, "metric": t.metric, "threshold": t.describe(), "source": t.source,
                     "measured": None if measured is None else round(measured, 6), "result": result})
    missed = any(r["result"] == "FAIL" for r in rows)
    code = EXIT_INVALID if invalid else EXIT_MISS if missed else EXIT_PASS
    return {"verdict": ("pass", "fail", "invalid")[code], "exit_code": code, "invalid_reasons": invalid,
            "exceptions": exceptions, "cpu_warning": cpu_warning, "thresholds": rows,
            "groups": {name: g.summary() for name, g in groups.items()},
            "entries": [{"type": rt, "name": name, "kind": group_of(rt, name), **e.summary()}
                        for (rt, name), e in sorted(entries.items(), key=lambda item: (item[0][1], item[0][0]))]}


def table(verdict: dict[str, Any]) -> str:
    """The verdict as printed at the end of a run."""
    lines = [("target", "threshold", "measured", "result")] + [
        (r["target"], r["threshold"], text(r["metric"], r["measured"]), r["result"]) for r in verdict["thresholds"]]
    widths = [max(len(line[i]) for line in lines) for i in range(4)]
    out = [" | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines]
    out.insert(1, "-+-".join("-" * w for w in widths))
    for name, g in verdict["groups"].items():
        out.append(f"{name:<5} requests={g['requests']} failures={g['failures']} conflicts={g['conflicts']} "
                   + " ".join(f"{m}={text('avg', g[f'{m}_ms'])}" for m in ("avg", "p50", "p95", "max")))
    out += [f"INVALID RUN: {reason}" for reason in verdict["invalid_reasons"]]
    out.append(f"SLA verdict: {verdict['verdict'].upper()} (exit code {verdict['exit_code']})")
    return "\nSLA gate (exact percentiles; logins and WebSocket judged apart)\n" + "\n".join(out) + "\n"
