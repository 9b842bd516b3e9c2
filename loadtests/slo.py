"""SLO gates evaluated on locust's statistics when a run ends.

Request names follow ``"<kind> <length_class>"`` (see ``loadtests.users``), e.g. ``"tts short"``,
``"stream-total long"``, ``"stream-ttfa medium"``. Gates:

* overall fail ratio ≤ ``max_fail_ratio``;
* shed ratio ≤ ``max_shed_ratio``: ``shed <class>`` entries are 429/503 answers with ``Retry-After`` (the
  service refusing excess load as designed, not a failure); their p95 ≤ ``shed_p95_ms`` (refusals are quick);
* p95 of every ``<kind> <length_class>`` entry ≤ the limit for its length class, except
* p95 of ``stream-ttfa *`` entries (time to first audio) ≤ ``ttfa_p95_ms``;
* p95 of ``stream-rtf *`` entries (stream time / audio duration, logged ×1000) ≤ ``rtf_p95``: above 1 a
  listener's playback would stall;
* at least ``min_requests`` requests were measured (a run that measured nothing must not pass).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from loadtests.corpus import LENGTH_CLASSES

TTFA_KIND = "stream-ttfa"
RTF_KIND = "stream-rtf"
SHED_KIND = "shed"
DERIVED_KINDS = (TTFA_KIND, RTF_KIND)  # extra entries per streamed request, not requests of their own
DEFAULT_RTF_P95 = 1.0
DEFAULT_P95_MS: dict[str, float] = {"short": 4000.0, "medium": 8000.0, "long": 20000.0}
DEFAULT_TTFA_P95_MS = 3000.0
DEFAULT_FAIL_RATIO = 0.01
DEFAULT_SHED_RATIO = 0.05  # steady load should fit; the spike run raises it (see Makefile)
DEFAULT_SHED_P95_MS = 1000.0
EXIT_SLO_MISSED = 3


class SloConfigError(ValueError):
    """An SLO threshold is malformed."""


@dataclass(frozen=True)
class SloConfig:
    """Thresholds; all latencies in milliseconds."""

    max_fail_ratio: float = DEFAULT_FAIL_RATIO
    p95_ms: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_P95_MS))
    ttfa_p95_ms: float = DEFAULT_TTFA_P95_MS
    rtf_p95: float = DEFAULT_RTF_P95
    min_requests: int = 1
    max_shed_ratio: float = DEFAULT_SHED_RATIO
    shed_p95_ms: float = DEFAULT_SHED_P95_MS

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_fail_ratio <= 1.0:
            raise SloConfigError(f"max fail ratio must be in [0, 1], got {self.max_fail_ratio}")
        if not 0.0 <= self.max_shed_ratio <= 1.0:
            raise SloConfigError(f"max shed ratio must be in [0, 1], got {self.max_shed_ratio}")
        if self.shed_p95_ms <= 0:
            raise SloConfigError("shed p95 limit must be > 0 ms")
        unknown = set(self.p95_ms) - set(LENGTH_CLASSES)
        if unknown:
            raise SloConfigError(f"p95 limits for unknown classes {sorted(unknown)}; use {LENGTH_CLASSES}")
        if any(v <= 0 for v in self.p95_ms.values()) or self.ttfa_p95_ms <= 0 or self.rtf_p95 <= 0:
            raise SloConfigError("latency limits must be > 0 ms")
        if self.min_requests < 0:
            raise SloConfigError("min_requests must be >= 0")


@dataclass(frozen=True)
class Check:
    """One evaluated gate."""

    name: str
    metric: str
    value: float
    limit: float
    ok: bool


def parse_class_limits(spec: str) -> dict[str, float]:
    """Parse ``"short=3000,medium=6000,long=15000"`` (any subset; unspecified classes keep defaults)."""
    limits = dict(DEFAULT_P95_MS)
    for item in filter(None, (s.strip() for s in spec.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in LENGTH_CLASSES:
            raise SloConfigError(f"bad p95 limit {item!r}: expected CLASS=MS with CLASS in {LENGTH_CLASSES}")
        try:
            limits[key] = float(value)
        except ValueError as exc:
            raise SloConfigError(f"bad p95 limit {item!r}: {value!r} is not a number") from exc
    return limits


def split_name(name: str) -> tuple[str, str] | None:
    """``"stream-total long"`` → ``("stream-total", "long")``; None for names outside the scheme."""
    kind, _, length_class = name.rpartition(" ")
    if not kind or length_class not in LENGTH_CLASSES:
        return None
    return kind, length_class


def evaluate(stats: Any, cfg: SloConfig) -> list[Check]:
    """Evaluate all gates on a ``locust.stats.RequestStats``."""
    real = [e for e in stats.entries.values() if (split_name(e.name) or ("",))[0] not in DERIVED_KINDS]
    n = sum(e.num_requests for e in real)
    ratio = sum(e.num_failures for e in real) / n if n else 0.0
    shed = sum(e.num_requests for e in real if (split_name(e.name) or ("",))[0] == SHED_KIND)
    shed_ratio = shed / n if n else 0.0
    served = n - shed
    checks = [
        Check("requests", "requests", served, cfg.min_requests, ok=served >= cfg.min_requests),
        Check("requests", "fail ratio", ratio, cfg.max_fail_ratio, ok=ratio <= cfg.max_fail_ratio),
        Check("requests", "shed ratio", shed_ratio, cfg.max_shed_ratio, ok=shed_ratio <= cfg.max_shed_ratio),
    ]
    for entry in sorted(stats.entries.values(), key=lambda e: e.name):
        parsed = split_name(entry.name)
        if parsed is None or entry.num_requests == 0:
            continue
        kind, length_class = parsed
        p95 = float(entry.get_response_time_percentile(0.95))
        if kind == SHED_KIND:
            checks.append(Check(entry.name, "p95 ms", p95, cfg.shed_p95_ms, p95 <= cfg.shed_p95_ms))
        elif kind == TTFA_KIND:
            checks.append(Check(entry.name, "TTFA p95 ms", p95, cfg.ttfa_p95_ms, p95 <= cfg.ttfa_p95_ms))
        elif kind == RTF_KIND:
            rtf = p95 / 1000
            checks.append(Check(entry.name, "RTF p95", rtf, cfg.rtf_p95, rtf <= cfg.rtf_p95))
        elif (limit := cfg.p95_ms.get(length_class)) is not None:
            checks.append(Check(entry.name, "p95 ms", p95, limit, p95 <= limit))
    return checks


def format_summary(stats: Any, checks: list[Check]) -> str:
    """Per-entry latency table followed by the SLO verdicts."""
    rows = [f"{'request':<22}{'reqs':>7}{'fails':>7}{'rps':>7}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}"]
    entries = sorted(stats.entries.values(), key=lambda e: e.name)
    duration = (
        max(stats.total.last_request_timestamp - stats.total.start_time, 1.0)
        if stats.total.num_requests
        else 1.0
    )
    for e in [*entries, stats.total]:
        if e.num_requests == 0 and e is not stats.total:
            continue
        pct = [e.get_response_time_percentile(q) if e.num_requests else 0 for q in (0.5, 0.95, 0.99)]
        rows.append(
            f"{e.name:<22}{e.num_requests:>7}{e.num_failures:>7}{e.num_requests / duration:>7.2f}"
            f"{pct[0]:>8.0f}{pct[1]:>8.0f}{pct[2]:>8.0f}{(e.max_response_time or 0):>8.0f}"
        )
    rows.append("")
    rows.append(f"{'SLO gate':<22}{'metric':<14}{'value':>10}{'limit':>10}  verdict")
    for c in checks:
        digits = 4 if c.metric in ("fail ratio", "shed ratio") else 2 if c.metric == "RTF p95" else 0
        value, limit = f"{c.value:.{digits}f}", f"{c.limit:.{digits}f}"
        rows.append(f"{c.name:<22}{c.metric:<14}{value:>10}{limit:>10}  {'ok' if c.ok else 'MISSED'}")
    missed = sum(not c.ok for c in checks)
    rows.append(f"SLO result: {'PASS' if not missed else f'FAIL ({missed} gate(s) missed)'}")
    return "\n".join(rows)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register ``--slo-*`` flags (each also settable by its env var) on locust's parser."""
    group = parser.add_argument_group("SLO gates")
    group.add_argument(
        "--slo-fail-ratio",
        type=float,
        env_var="SLO_FAIL_RATIO",
        default=DEFAULT_FAIL_RATIO,
        help="maximum overall failure ratio (0..1)",
    )
    group.add_argument(
        "--slo-p95-ms",
        type=str,
        env_var="SLO_P95_MS",
        default="",
        help="p95 limits per length class, e.g. short=3000,medium=6000,long=15000",
    )
    group.add_argument(
        "--slo-ttfa-p95-ms",
        type=float,
        env_var="SLO_TTFA_P95_MS",
        default=DEFAULT_TTFA_P95_MS,
        help="p95 limit of time to first audio for streaming requests",
    )
    group.add_argument(
        "--slo-rtf-p95",
        type=float,
        env_var="SLO_RTF_P95",
        default=DEFAULT_RTF_P95,
        help="p95 of streamed time / audio duration (>1: playback stalls)",
    )
    group.add_argument(
        "--slo-min-requests", type=int, env_var="SLO_MIN_REQUESTS", default=1, help="min requests served"
    )
    group.add_argument(
        "--slo-shed-ratio",
        type=float,
        env_var="SLO_SHED_RATIO",
        default=DEFAULT_SHED_RATIO,
        help="maximum share of requests refused with 429/503 + Retry-After (0..1)",
    )
    group.add_argument(
        "--slo-shed-p95-ms",
        type=float,
        env_var="SLO_SHED_P95_MS",
        default=DEFAULT_SHED_P95_MS,
        help="p95 limit of the time to a 429/503 refusal",
    )


def config_from_options(options: Any | None) -> SloConfig:
    """Build the config from locust's parsed options, or from env vars when there are none (library mode)."""
    if options is None or not hasattr(options, "slo_fail_ratio"):
        return SloConfig(
            max_fail_ratio=float(os.environ.get("SLO_FAIL_RATIO", DEFAULT_FAIL_RATIO)),
            p95_ms=parse_class_limits(os.environ.get("SLO_P95_MS", "")),
            ttfa_p95_ms=float(os.environ.get("SLO_TTFA_P95_MS", DEFAULT_TTFA_P95_MS)),
            rtf_p95=float(os.environ.get("SLO_RTF_P95", DEFAULT_RTF_P95)),
            min_requests=int(os.environ.get("SLO_MIN_REQUESTS", 1)),
            max_shed_ratio=float(os.environ.get("SLO_SHED_RATIO", DEFAULT_SHED_RATIO)),
            shed_p95_ms=float(os.environ.get("SLO_SHED_P95_MS", DEFAULT_SHED_P95_MS)),
        )
    return SloConfig(
        max_fail_ratio=options.slo_fail_ratio,
        p95_ms=parse_class_limits(options.slo_p95_ms or ""),
        ttfa_p95_ms=options.slo_ttfa_p95_ms,
        rtf_p95=options.slo_rtf_p95,
        min_requests=options.slo_min_requests,
        max_shed_ratio=options.slo_shed_ratio,
        shed_p95_ms=options.slo_shed_p95_ms,
    )
