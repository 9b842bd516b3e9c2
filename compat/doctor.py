"""Dependency doctor: run every environment check, print pass/warn/fail with a one-line remedy each.

``python -m compat doctor [--json] [--model-dir DIR]``; exit status 1 if any check fails.
Checks live in :mod:`compat.checks`; each returns one or more :class:`CheckResult` and never raises
(a crashing check is reported as a failure naming the exception).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Status = Literal["pass", "warn", "fail", "skip"]
PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class CheckResult:
    """Outcome of one check: ``summary`` says what was found, ``remedy`` what to do (warn/fail)."""

    name: str
    status: Status
    summary: str
    remedy: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class DoctorOptions:
    """What the checks look at besides the running interpreter."""

    model_dir: Path | None = None
    scan_paths: list[Path] = field(default_factory=list)
    project_root: Path = PROJECT_ROOT


CheckFn = Callable[[DoctorOptions], "CheckResult | Iterable[CheckResult]"]


def ok(name: str, summary: str, **details: Any) -> CheckResult:
    return CheckResult(name, "pass", summary, details=details)


def warn(name: str, summary: str, remedy: str, **details: Any) -> CheckResult:
    return CheckResult(name, "warn", summary, remedy, details)


def fail(name: str, summary: str, remedy: str, **details: Any) -> CheckResult:
    return CheckResult(name, "fail", summary, remedy, details)


def skip(name: str, summary: str, **details: Any) -> CheckResult:
    return CheckResult(name, "skip", summary, details=details)


@dataclass
class Report:
    results: list[CheckResult]
    seconds: float

    @property
    def ok(self) -> bool:
        return not any(r.status == "fail" for r in self.results)

    def counts(self) -> dict[str, int]:
        out = {"pass": 0, "warn": 0, "fail": 0, "skip": 0}
        for r in self.results:
            out[r.status] += 1
        return out

    def by_name(self, name: str) -> CheckResult:
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(f"no check named {name!r}; have {[r.name for r in self.results]}")

    def to_json(self) -> str:
        payload = {
            "ok": self.ok,
            "counts": self.counts(),
            "seconds": round(self.seconds, 3),
            "checks": [asdict(r) | {"seconds": round(r.seconds, 3)} for r in self.results],
        }
        return json.dumps(payload, indent=2, default=str, ensure_ascii=False)

    def to_text(self) -> str:
        lines = []
        width = max((len(r.name) for r in self.results), default=0)
        for r in self.results:
            lines.append(f"{r.status.upper():4}  {r.name:<{width}}  {r.summary}")
            if r.remedy:
                lines.append(f"{'':4}  {'':<{width}}  remedy: {r.remedy}")
        c = self.counts()
        verdict = "OK" if self.ok else "FAILED"
        lines.append(
            f"doctor {verdict}: {c['pass']} pass, {c['warn']} warn, {c['fail']} fail, {c['skip']} skip "
            f"in {self.seconds:.1f} s"
        )
        return "\n".join(lines)


def _run_one(name: str, fn: CheckFn, options: DoctorOptions) -> list[CheckResult]:
    start = time.perf_counter()
    try:
        produced = fn(options)
        results = [produced] if isinstance(produced, CheckResult) else list(produced)
    except Exception as exc:  # a check must never take the doctor down
        results = [
            fail(
                name,
                f"check crashed: {type(exc).__name__}: {exc}",
                f"'{name}' dependencies are broken or half-installed: reinstall from the lock (make install)",
            )
        ]
    elapsed = time.perf_counter() - start
    for r in results:
        r.seconds = elapsed / max(len(results), 1)
    return results


def run(options: DoctorOptions | None = None, only: Sequence[str] | None = None) -> Report:
    """Run the checks (all, or those named in ``only``) and return the report."""
    from compat.checks import CHECKS

    options = options or DoctorOptions()
    if options.model_dir is None and os.environ.get("TTS_MODEL_DIR"):
        options.model_dir = Path(os.environ["TTS_MODEL_DIR"])
    if only:
        unknown = sorted(set(only) - set(CHECKS))
        if unknown:
            raise ValueError(f"unknown check(s) {unknown}; available: {list(CHECKS)}")
    start = time.perf_counter()
    results: list[CheckResult] = []
    for name, fn in CHECKS.items():
        if only and name not in only:
            continue
        results.extend(_run_one(name, fn, options))
    return Report(results, time.perf_counter() - start)
