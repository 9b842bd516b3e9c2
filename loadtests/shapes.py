"""Load shapes: steady, step, spike, double wave and soak.

Every profile is a pure function of elapsed time (``users_at``) so it can be unit-tested; the
``SelectedShape`` exported by the locustfile picks one by ``--shape`` / ``LOADTEST_SHAPE`` and reads
locust's common options: ``-u`` is the *base* user count, ``-r`` the ramp rate, ``-t`` the run time
(steady and soak only; the other profiles end on their own).
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from locust import LoadTestShape

DEFAULT_RUN_TIME_S = {"steady": 60.0, "soak": 1800.0}


class ShapeError(ValueError):
    """Unknown shape name or bad shape parameter."""


@dataclass(frozen=True)
class ShapeParams:
    """Parameters common to all profiles (times in seconds)."""

    users: int = 4
    spawn_rate: float = 2.0
    run_time: float | None = None
    spike_multiplier: float = 5.0
    spike_seconds: float = 60.0
    warmup_seconds: float = 30.0
    recovery_seconds: float = 90.0
    step_seconds: float = 30.0
    steps: int = 4
    wave_period: float = 120.0

    def __post_init__(self) -> None:
        if self.users < 1:
            raise ShapeError(f"base users must be >= 1, got {self.users}")
        if self.spawn_rate <= 0:
            raise ShapeError(f"spawn rate must be > 0, got {self.spawn_rate}")
        if self.spike_multiplier < 1:
            raise ShapeError(f"spike multiplier must be >= 1, got {self.spike_multiplier}")
        for name in ("spike_seconds", "warmup_seconds", "recovery_seconds", "step_seconds", "wave_period"):
            if getattr(self, name) <= 0:
                raise ShapeError(f"{name} must be > 0")
        if self.steps < 1:
            raise ShapeError("steps must be >= 1")


class Profile(LoadTestShape):
    """Base class: subclasses implement ``users_at(t)``; ``None`` ends the test."""

    abstract = True
    name: ClassVar[str] = ""

    def __init__(self, params: ShapeParams | None = None) -> None:
        super().__init__()
        self.params = params or ShapeParams()

    def users_at(self, t: float) -> int | None:
        raise NotImplementedError

    def rate_at(self, t: float) -> float:
        """Spawn rate in users/s (profiles with sudden jumps override this)."""
        return self.params.spawn_rate

    def tick(self) -> tuple[int, float] | None:
        t = self.get_run_time()
        users = self.users_at(t)
        return None if users is None else (users, self.rate_at(t))


class SteadyShape(Profile):
    """Constant base users until the run time (default 60 s)."""

    name = "steady"

    def users_at(self, t: float) -> int | None:
        end = self.params.run_time or DEFAULT_RUN_TIME_S[self.name]
        return None if t >= end else self.params.users


class SoakShape(SteadyShape):
    """Steady base load for a long time (default 30 min) to find leaks and drift."""

    name = "soak"


class StepShape(Profile):
    """Adds ``users`` every ``step_seconds`` for ``steps`` steps."""

    name = "step"

    def users_at(self, t: float) -> int | None:
        step = int(t // self.params.step_seconds)
        return None if step >= self.params.steps else self.params.users * (step + 1)


class SpikeShape(Profile):
    """Base load, then ×``spike_multiplier`` for ``spike_seconds``, then base load again to watch recovery."""

    name = "spike"

    def users_at(self, t: float) -> int | None:
        p = self.params
        if t < p.warmup_seconds:
            return p.users
        if t < p.warmup_seconds + p.spike_seconds:
            return max(p.users + 1, round(p.users * p.spike_multiplier))
        if t < p.warmup_seconds + p.spike_seconds + p.recovery_seconds:
            return p.users
        return None

    def rate_at(self, t: float) -> float:
        # a spike is sudden: reach the peak within ~2 s, and drop back just as fast
        return max(self.params.spawn_rate, self.params.users * self.params.spike_multiplier / 2)


class DoubleWaveShape(Profile):
    """Two sine-shaped peaks per ``wave_period`` between base and 4× base users, two periods long."""

    name = "doublewave"

    def users_at(self, t: float) -> int | None:
        p = self.params
        if t >= 2 * p.wave_period:
            return None
        phase = 2 * math.pi * t / (p.wave_period / 2)  # two peaks per period
        level = (1 - math.cos(phase)) / 2  # 0 → 1 → 0
        return round(p.users + 3 * p.users * level)


PROFILES: dict[str, type[Profile]] = {
    cls.name: cls for cls in (SteadyShape, StepShape, SpikeShape, DoubleWaveShape, SoakShape)
}


def make_profile(name: str, params: ShapeParams) -> Profile:
    """Instantiate the profile called ``name``."""
    try:
        cls = PROFILES[name.strip().lower()]
    except KeyError:
        raise ShapeError(f"unknown shape {name!r}; choose one of {sorted(PROFILES)}") from None
    return cls(params)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register ``--shape`` and profile parameters on locust's parser."""
    g = parser.add_argument_group("load shape")
    g.add_argument("--shape", env_var="LOADTEST_SHAPE", default="steady", help=f"one of {sorted(PROFILES)}")
    g.add_argument("--spike-multiplier", type=float, env_var="LOADTEST_SPIKE_MULTIPLIER", default=5.0)
    g.add_argument("--spike-seconds", type=float, env_var="LOADTEST_SPIKE_SECONDS", default=60.0)
    g.add_argument("--warmup-seconds", type=float, env_var="LOADTEST_WARMUP_SECONDS", default=30.0)
    g.add_argument("--recovery-seconds", type=float, env_var="LOADTEST_RECOVERY_SECONDS", default=90.0)
    g.add_argument("--step-seconds", type=float, env_var="LOADTEST_STEP_SECONDS", default=30.0)
    g.add_argument("--steps", type=int, env_var="LOADTEST_STEPS", default=4)
    g.add_argument("--wave-period", type=float, env_var="LOADTEST_WAVE_PERIOD", default=120.0)


def params_from_options(options: Any | None) -> tuple[str, ShapeParams]:
    """Shape name and parameters from locust's parsed options (env vars in library mode)."""
    if options is None or not hasattr(options, "shape"):
        return os.environ.get("LOADTEST_SHAPE", "steady"), ShapeParams()
    base = ShapeParams(
        users=options.num_users or ShapeParams.users,
        spawn_rate=options.spawn_rate or ShapeParams.spawn_rate,
        run_time=float(options.run_time) if options.run_time else None,
    )
    params = replace(
        base,
        spike_multiplier=options.spike_multiplier,
        spike_seconds=options.spike_seconds,
        warmup_seconds=options.warmup_seconds,
        recovery_seconds=options.recovery_seconds,
        step_seconds=options.step_seconds,
        steps=options.steps,
        wave_period=options.wave_period,
    )
    return options.shape, params


class SelectedShape(LoadTestShape):
    """The one shape locust sees: delegates to the profile chosen by ``--shape``/``LOADTEST_SHAPE``."""

    use_common_options = True

    def __init__(self) -> None:
        super().__init__()
        self.profile: Profile | None = None

    def _ensure_profile(self) -> Profile:
        if self.profile is None:
            options = getattr(self.runner.environment, "parsed_options", None) if self.runner else None
            name, params = params_from_options(options)
            self.profile = make_profile(name, params)
            self.profile.runner = self.runner
            self.profile.reset_time()
        return self.profile

    def reset_time(self) -> None:
        super().reset_time()
        if self.profile is not None:
            self.profile.reset_time()

    def tick(self) -> tuple[int, float] | None:
        return self._ensure_profile().tick()
