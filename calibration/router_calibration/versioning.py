"""Write a fitted policy as the next version of a router model directory (`router-calibrate fit --policy-out`)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from pathlib import Path

from llm_router.core.policy import load_policy, write_policy

from router_calibration.calibrate import fitted_policy
from router_calibration.drift import with_band
from router_calibration.fit import Selection
from router_calibration.logs import OutcomeLog


def versions(model_dir: Path) -> list[int]:
    """The numeric version folders of a Triton model directory, ascending."""
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and re.fullmatch(r"\d+", p.name))


def parse_tier_map(text: str | None) -> dict[str, str]:
    """'LOG_TIER=ROUTER_TIER,...' -> {log tier: router tier}."""
    if not text:
        return {}
    out = {}
    for item in text.split(","):
        if "=" not in item:
            raise ValueError(f"--tier-map items are LOG_TIER=ROUTER_TIER, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def write_policy_version(
    model_dir: Path,
    sel: Selection,
    calib: OutcomeLog,
    tier_map: Mapping[str, str],
    header: str,
    band_log: OutcomeLog | None = None,
) -> Path:
    """DIR/<latest+1>/policy.yaml (+ a copy of the latest version's model.py); the base policy's tier specs
    are reused for tiers it has (after `tier_map`); `fitted` is the band replay gives on `band_log` (default `calib`:
    the traffic the alarms should expect). Returns the new version's folder."""
    model_dir.mkdir(parents=True, exist_ok=True)
    found = versions(model_dir)
    latest = model_dir / str(found[-1]) if found else None
    base = None
    if latest is not None and (latest / "policy.yaml").is_file():
        base = load_policy(latest / "policy.yaml")
    new_version = (found[-1] + 1) if found else 1
    # the band of the drift alarms: what the policy does on the log it was fitted on (router_calibration.drift)
    policy = fitted_policy(sel, calib, base, tier_map, version=new_version)
    policy = with_band(policy, band_log if band_log is not None else calib, tier_map)
    out = model_dir / str(new_version)
    out.mkdir()
    try:
        write_policy(policy, out / "policy.yaml", header=header)
        if latest is not None and (latest / "model.py").is_file():
            shutil.copy2(latest / "model.py", out / "model.py")
    except Exception:
        shutil.rmtree(out, ignore_errors=True)  # no half-written version for Triton to load
        raise
    return out
