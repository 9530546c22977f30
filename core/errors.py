"""The two exception families xopt raises.

The CLI catches `UserError` only: it prints one line and exits 1. Anything else is a
bug in xopt or a dependency and keeps its traceback.
"""
from __future__ import annotations


class UserError(Exception):
    """Something the user can fix: bad input, missing file, missing extra, existing output."""

    exit_code = 1

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = self.problem.rstrip(".")
        if self.fix:
            text += f"; {self.fix.rstrip('.')}"
        return " ".join(text.split()) + "."


class InternalError(Exception):
    """A failure of xopt itself; its traceback matters, so the CLI does not catch it."""


class MissingExtraError(UserError):
    def __init__(self, module: str, extra: str, why: str = ""):
        what = f"{module} is not installed" + (f" ({why})" if why else "")
        super().__init__(what, f'install it with: pip install "xopt[{extra}]"')
        self.module = module
        self.extra = extra


class OutputExistsError(UserError):
    def __init__(self, path, flag: str = "--out"):
        """`flag`: the option the command really has for choosing where outputs go."""
        super().__init__(f"{path} already exists", f"pass --force to overwrite it or choose another {flag}")
        self.path = path


class UnknownChoiceError(UserError):
    def __init__(self, kind: str, value: str, choices):
        names = sorted(choices)
        hint = did_you_mean(value, names)
        super().__init__(f"unknown {kind} '{value}'" + (f" (did you mean '{hint}'?)" if hint else ""),
                         f"choose one of: {', '.join(names)}")


def did_you_mean(value: str, choices) -> str | None:
    """The choice `value` most likely meant: a case-insensitive match, else the closest spelling."""
    import difflib

    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    if str(value).lower() in lowered:
        return lowered[str(value).lower()]
    close = difflib.get_close_matches(str(value).lower(), list(lowered), n=1, cutoff=0.75)
    return lowered[close[0]] if close else None


class ParityError(UserError):
    """An artifact disagrees with the FP32 PyTorch reference beyond its tolerance.

    A user error because the fix is a user choice (another variant, looser tolerance,
    keeping more layers in FP32); the per-output numbers are in `diffs`.
    """

    def __init__(self, artifact: str, diffs: dict, tolerance: dict, reference: str = "PyTorch FP32"):
        self.artifact = artifact
        self.diffs = diffs
        self.tolerance = tolerance
        parts = [
            f"{name}: max_abs={d['max_abs']:.3g} max_rel={d['max_rel']:.3g} mean_abs={d['mean_abs']:.3g}"
            + ("" if d.get("finite", True) else " (NaN/Inf)")
            for name, d in diffs.items()
        ]
        tol = ", ".join(f"{k}<={v:g}" for k, v in tolerance.items() if k not in ("atol", "rtol"))
        if "atol" in tolerance or "rtol" in tolerance:  # numpy.allclose-style, against the output's peak
            combined = f"max_abs<={tolerance.get('atol', 0):g}+{tolerance.get('rtol', 0):g}*max|ref|"
            tol = ", ".join(t for t in (tol, combined) if t)
        super().__init__(
            f"{artifact} failed the parity check against {reference} ({'; '.join(parts)}; tolerance {tol})",
            "keep more layers in FP32, pick another variant, or loosen the tolerance with --tolerance",
        )


class NonFiniteError(UserError):
    def __init__(self, where: str, first: str | None = None):
        msg = f"{where} produced NaN/Inf"
        if first:
            msg += f", first in {first}"
        super().__init__(msg, "keep that part in FP32 (or use a lower-precision-safe variant)")


class BudgetError(UserError):
    """A run does not fit the device budget; `suggestion` names what does."""

    def __init__(self, what: str, suggestion: str):
        super().__init__(f"{what} does not fit the budget", suggestion)


class GateFailed(UserError):
    """No build of a gated variant meets its drift gate. `facts` hold what was reached (the best
    drift and its speed, the groups kept, the builds tried) for the manifest and the report: a
    failing variant is a result, recorded beside the variants that passed."""

    exit_code = 3

    def __init__(self, problem: str, fix: str, facts: dict):
        super().__init__(problem, fix)
        self.facts = facts
