"""Profiles: which reading of Truto and Coviu the simulated account plays.

- `default`: the sandbox's own reading (ISO times, `result` envelopes, `id` in the query schema, pages of 25, ...).
- `variant`: every alternative a real account may choose (README), all at once: `results` envelopes from
  `/tools` and lists, `id` in the body schema, the session summary served as a custom method (POST), RFC-1123
  times, `ratelimit-reset` as a Unix time and `Retry-After` as an HTTP date, pages of 2 rows on every list with
  `limit` ignored, canceled sessions listed unless filtered, sparse submissions, remote errors with an empty
  `message` (the text is in `raw_response`), sessions listed with their `actual_end_time` (OAS's optional field)
  and their participants' `entry_time`.
- `random`: each alternative picked by a seeded `random.Random`, so a failing seed replays (`random-<seed>`).

Only the sandbox and the tests know profiles: the product reads whatever the account answers.
Environment: `COVIU_SANDBOX_PROFILE=default|variant|random`, `COVIU_SANDBOX_SEED=<int>` (random only).
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from sandbox.config import FaultConfig, SandboxConfig

ProfileName = Literal["default", "variant", "random"]
PROFILE_NAMES: tuple[str, ...] = get_args(ProfileName)

# Every alternative a real account may choose, as SandboxConfig fields (the first value of each is the default's).
ALTERNATIVES: dict[str, tuple[Any, ...]] = {
    "tools_envelope": ("result", "results"),
    "list_envelope": ("result", "results"),
    "id_location": ("query", "body"),
    "summary_method": ("get", "custom"),
    "time_format": ("iso", "rfc1123"),
    "ratelimit_reset_format": ("seconds", "unix"),
    "retry_after_format": ("seconds", "http-date"),
    "page_size": (None, 2, 3),
    "canceled_listed_by_default": (False, True),
    "submission_layout": ("full", "sparse"),
    "remote_error_message": ("message", "raw_response"),
    "session_actual_end_listed": (False, True),
    "participant_entry_listed": (False, True),  # last: the earlier alternatives' draws for a seed stay as they were
}

VARIANT: dict[str, Any] = {
    "tools_envelope": "results",
    "list_envelope": "results",
    "id_location": "body",
    "summary_method": "custom",
    "time_format": "rfc1123",
    "ratelimit_reset_format": "unix",
    "retry_after_format": "http-date",
    "page_size": 2,
    "canceled_listed_by_default": True,
    "submission_layout": "sparse",
    "remote_error_message": "raw_response",
    "session_actual_end_listed": True,
    "participant_entry_listed": True,
}


class ProfileError(ValueError):
    """An unknown profile name or a bad seed."""


@dataclass(frozen=True)
class Profile:
    """A profile's name, its seed (random only) and the settings it gives."""

    name: str
    seed: int | None
    config: SandboxConfig

    @property
    def label(self) -> str:
        """`default`, `variant` or `random-<seed>`: replayable with `--profile random --seed <seed>`."""
        return self.name if self.seed is None else f"{self.name}-{self.seed}"


def random_choices(seed: int) -> dict[str, Any]:
    """One value per alternative, decided by `seed` alone (the same seed always gives the same account)."""
    rng = random.Random(f"coviu-sandbox-profile:{seed}")
    return {name: rng.choice(values) for name, values in ALTERNATIVES.items()}


def build_profile(name: str, seed: int | None = None, **overrides: Any) -> Profile:
    """The named profile's settings, then `overrides` (e.g. `rate_limit=500`) on top.

    `random` needs a seed; the other profiles refuse one (it would change nothing and suggest it did).
    """
    if name not in PROFILE_NAMES:
        raise ProfileError(f"unknown sandbox profile {name!r}: expected one of {', '.join(PROFILE_NAMES)}")
    if name == "random":
        if seed is None:
            raise ProfileError("the random profile needs a seed (COVIU_SANDBOX_SEED or --seed)")
        settings = random_choices(seed)
    else:
        if seed is not None:
            raise ProfileError(f"a seed is only for the random profile, not {name!r}")
        settings = dict(VARIANT) if name == "variant" else {}
    return Profile(name, seed, SandboxConfig.model_validate({**settings, **overrides}))


def parse_label(label: str) -> Profile:
    """`default`, `variant` or `random-<seed>` (the form in test ids and serve banners)."""
    name, _, seed = label.partition("-")
    if name == "random" and seed:
        try:
            return build_profile(name, int(seed))
        except ValueError as exc:
            raise ProfileError(f"bad profile label {label!r}: expected random-<integer seed>") from exc
    if seed:
        raise ProfileError(f"bad profile label {label!r}")
    return build_profile(name)


def profile_from_env(env: Mapping[str, str]) -> Profile:
    """`COVIU_SANDBOX_PROFILE` (default `default`) and `COVIU_SANDBOX_SEED` (random only)."""
    name = env.get("COVIU_SANDBOX_PROFILE", "").strip() or "default"
    raw_seed = env.get("COVIU_SANDBOX_SEED", "").strip()
    seed: int | None = None
    if raw_seed:
        try:
            seed = int(raw_seed)
        except ValueError as exc:
            raise ProfileError(f"COVIU_SANDBOX_SEED: expected an integer, got {raw_seed!r}") from exc
    return build_profile(name, seed)


def config_from_env(environ: Mapping[str, str] | None = None) -> SandboxConfig:
    """The sandbox's settings from the environment: the profile's (`COVIU_SANDBOX_PROFILE`, `COVIU_SANDBOX_SEED`;
    default: `default`), overridden field by field by `COVIU_SANDBOX_CONFIG`, then `COVIU_SANDBOX_FAULTS` when set
    (JSON objects)."""
    env = os.environ if environ is None else environ
    config = profile_from_env(env).config
    raw_config = env.get("COVIU_SANDBOX_CONFIG", "").strip()
    if raw_config:
        overrides = json.loads(raw_config)
        if not isinstance(overrides, dict):
            raise ValueError("COVIU_SANDBOX_CONFIG: expected a JSON object")
        config = SandboxConfig.model_validate({**config.model_dump(), **overrides})
    raw_faults = env.get("COVIU_SANDBOX_FAULTS", "").strip()
    if raw_faults:
        config.faults = FaultConfig.model_validate(json.loads(raw_faults))
    return config


def parse_seeds(spec: str) -> list[int]:
    """`1-50`, `3,7,9` or a mix (`1-3,10`): the seeds of a soak run (`COVIU_TEST_PROFILE_SEEDS`)."""
    seeds: list[int] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        first, dash, last = part.partition("-")
        try:
            values = range(int(first), int(last) + 1) if dash else range(int(first), int(first) + 1)
        except ValueError as exc:
            raise ProfileError(f"bad seed list {spec!r}: expected e.g. 1-50 or 1,2,7") from exc
        seeds.extend(v for v in values if v not in seeds)
    return seeds


def serve_config(
    name: str | None = None, seed: int | None = None, environ: Mapping[str, str] | None = None
) -> tuple[SandboxConfig, str]:
    """The settings for `sandbox serve` and how to name them in its banner.

    `name`/`seed` (the command's flags) win over `COVIU_SANDBOX_PROFILE`/`COVIU_SANDBOX_SEED`; the other
    `COVIU_SANDBOX_*` variables apply on top as usual. A random profile without a seed gets a fresh one, and the
    banner says which, so the run can be replayed.
    """
    env = dict(os.environ if environ is None else environ)
    if name is not None:
        env["COVIU_SANDBOX_PROFILE"] = name
    if seed is not None:
        env["COVIU_SANDBOX_SEED"] = str(seed)
    if env.get("COVIU_SANDBOX_PROFILE", "").strip() == "random" and not env.get("COVIU_SANDBOX_SEED", "").strip():
        env["COVIU_SANDBOX_SEED"] = str(random.SystemRandom().randrange(1, 1_000_000))
    profile = profile_from_env(env)
    described = profile.label
    if profile.seed is not None:
        described += f" (replay: --profile {profile.name} --seed {profile.seed})"
    return config_from_env(env), described
