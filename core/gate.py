"""The drift gate in numbers, shared by the export-time precision search and the profile's
verdict, so a variant the export passes is a variant the profile passes on the same inputs.

A gate (xopt.spec.DriftGate) bounds one domain term against FP32. Its bound is `k` times the
noise floor (the FP32 model's own drift under a ±1 input quantum), or the spec's absolute
limit, whichever is looser; a user's `max_drop` replaces both with a drop in the term's own
units (MAE, Å, IoU or lDDT points, dB of SDR)."""
from __future__ import annotations

import math

from xopt.spec import DriftGate


def estimated_drop(parity_db: float, nominal_db: float) -> float:
    """Quality (dB) that a model scoring `nominal_db` loses to an error `parity_db` below its
    output, uncorrelated with the model's own error: 10·log10(1 + 10^((nominal − parity)/10))."""
    if not math.isfinite(parity_db):
        return 0.0 if parity_db > 0 else float("inf")
    return 10.0 * math.log10(1.0 + 10.0 ** ((nominal_db - parity_db) / 10.0))


def drop(gate: DriftGate, value: float) -> float:
    """How much worse than FP32 `value` is, in the term's units (0: identical)."""
    if not math.isfinite(value):
        return float("inf")
    if not gate.higher_is_better:
        return value
    if gate.db:
        if gate.nominal is None:
            raise ValueError(f"gate {gate.key} is in dB but names no nominal quality to estimate a drop on")
        return estimated_drop(value, gate.nominal)
    return (1.0 if gate.perfect is None else gate.perfect) - value


def noise_bound(gate: DriftGate, noise: float, multiple: float) -> float:
    if gate.db:
        step = 20 * math.log10(multiple)
        return noise - step if gate.higher_is_better else noise + step
    return noise / multiple if gate.higher_is_better else noise * multiple


def bounds(gate: DriftGate, noise: float | None, multiple: float | None = None) -> list[tuple[str, float]]:
    multiple = gate.noise_multiple if multiple is None else multiple
    out = []
    if multiple and noise is not None and math.isfinite(float(noise)):
        out.append(("noise", noise_bound(gate, float(noise), multiple)))
    if gate.limit is not None:
        out.append(("limit", float(gate.limit)))
    return out


def loosest(gate: DriftGate, found: list[tuple[str, float]]) -> tuple[str, float]:
    return min(found, key=lambda b: b[1]) if gate.higher_is_better else max(found, key=lambda b: b[1])


def within(gate: DriftGate, value: float, bound: float) -> bool:
    return value >= bound if gate.higher_is_better else value <= bound


NOT_APPLIED = ("seeded-random weights are chaotic, so a gate in the model's terms means nothing on them; "
               "pass --checkpoint (or --max-drop) to gate")


def applies(weights: dict | None, max_drop: float | None) -> tuple[bool, str]:
    """Whether a drift gate is enforced for these weights: always for a checkpoint or an explicit
    `max_drop`; not on seeded-random weights, where every perturbation is amplified (INT8 rounding
    moves a random MODNet's matte 10x its ±1-grey-level noise floor) and no build could pass."""
    if max_drop is not None or (weights or {}).get("kind") != "seeded-random":
        return True, ""
    return False, NOT_APPLIED


class Judge:
    """Whether a domain value passes: the spec's gate at `multiple` x the noise floor, or `max_drop`.
    With `applied` False the gate is measured and described but decides nothing (`ok` is always
    true; `would_pass` says what it would have said)."""

    def __init__(self, gate: DriftGate, noise: float | None, multiple: float | None = None,
                 max_drop: float | None = None, applied: bool = True, why_not: str = ""):
        self.gate, self.noise, self.max_drop = gate, noise, max_drop
        self.applied, self.why_not = applied, why_not
        self.multiple = gate.noise_multiple if multiple is None else multiple
        found = bounds(gate, noise, self.multiple)
        self.kind, self.bound = loosest(gate, found) if found else (None, None)
        if max_drop is None and self.bound is None:
            raise ValueError(f"gate {gate.key} has neither a noise floor nor a limit to judge by")

    def ok(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        return self.would_pass(value) if self.applied else True

    def would_pass(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.max_drop is not None:
            return drop(self.gate, value) <= self.max_drop
        return within(self.gate, value, self.bound)

    def better(self, a: float, b: float) -> bool:
        """a is closer to FP32 than b."""
        return drop(self.gate, a) < drop(self.gate, b)

    def describe(self) -> str:
        g = self.gate
        if self.max_drop is not None:
            return f"{g.key} drop <= {self.max_drop:g}{g.unit} (--max-drop)"
        sign = ">=" if g.higher_is_better else "<="
        why = f"{self.multiple:g}x the noise floor {self.noise:.4g}{g.unit}" if self.kind == "noise" else "the spec's limit"
        return f"{g.key} {sign} {self.bound:.4g}{g.unit} ({why})"

    def as_dict(self) -> dict:
        return {"key": self.gate.key, "higher_is_better": self.gate.higher_is_better, "noise_floor": self.noise,
                "noise_multiple": self.multiple, "limit": self.gate.limit, "max_drop": self.max_drop,
                "bound": self.bound, "bound_kind": "max_drop" if self.max_drop is not None else self.kind,
                "unit": self.gate.unit, "text": self.describe(), "applied": self.applied,
                **({"why_not_applied": self.why_not} if not self.applied else {})}
