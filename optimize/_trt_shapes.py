"""Optimisation-profile shapes: the `PassContext.engine_shapes` contract, its text form for the
command line, and validation against the graph's inputs.

Contract: ``{input_name: (min_shape, opt_shape, max_shape)}`` with each shape a full-rank
sequence of positive ints (batch included), for every graph input that has a dynamic
axis; static inputs may be left out (their one shape is used). Text form:
``name:1x3x256x256,1x3x512x512,1x3x1088x1920;other:...``.
"""
from __future__ import annotations

from typing import Mapping, Sequence

from xopt.errors import UserError

Shapes = dict[str, dict[str, list[int]]]  # normalised: name -> {"min": [...], "opt": [...], "max": [...]}
_FIX = "pass shapes as name:MINxDIMS,OPTxDIMS,MAXxDIMS (e.g. input:1x3x256x256,1x3x512x512,1x3x1088x1920)"


def parse_text(text: str) -> dict[str, tuple[list[int], list[int], list[int]]]:
    out = {}
    for part in [p.strip() for p in text.split(";") if p.strip()]:
        name, sep, rest = part.rpartition(":")
        triple = rest.split(",")
        if not sep or not name or len(triple) != 3:
            raise UserError(f"engine shapes {part!r} are not name:min,opt,max", _FIX)
        try:
            out[name] = tuple([int(d) for d in s.lower().split("x")] for s in triple)
        except ValueError as exc:
            raise UserError(f"engine shapes {part!r} contain a non-integer dimension", _FIX) from exc
    return out


def normalise(given: Mapping[str, Sequence] | None, inputs: Mapping[str, list]) -> Shapes:
    """Validate `given` against the graph inputs (name -> dims, str for dynamic) and fill static ones."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(inputs))
    if unknown:
        raise UserError(f"engine shapes name unknown input(s) {', '.join(unknown)}",
                        f"the graph inputs are {', '.join(inputs)}")
    out: Shapes = {}
    for name, dims in inputs.items():
        dynamic = [i for i, d in enumerate(dims) if not isinstance(d, int) or d <= 0]
        if name not in given:
            if dynamic:
                raise UserError(f"input {name} has dynamic axes {dynamic} ({'x'.join(map(str, dims))}) and no "
                                "min/opt/max shapes were given", _FIX)
            out[name] = {"min": list(dims), "opt": list(dims), "max": list(dims)}
            continue
        triple = given[name]
        if isinstance(triple, Mapping):
            triple = (triple.get("min"), triple.get("opt"), triple.get("max"))
        if len(triple) != 3 or any(s is None for s in triple):
            raise UserError(f"engine shapes for {name} must be (min, opt, max)", _FIX)
        lo, opt, hi = ([int(d) for d in s] for s in triple)
        for label, shape in (("min", lo), ("opt", opt), ("max", hi)):
            if len(shape) != len(dims):
                raise UserError(f"{label} shape {shape} of {name} has rank {len(shape)}, the graph's is {len(dims)}",
                                _FIX)
            if any(d <= 0 for d in shape):
                raise UserError(f"{label} shape {shape} of {name} has a non-positive dimension", _FIX)
            for i, d in enumerate(dims):
                if i not in dynamic and shape[i] != d:
                    raise UserError(f"{label} shape {shape} of {name} changes static axis {i} (fixed at {d})", _FIX)
        if not all(a <= b <= c for a, b, c in zip(lo, opt, hi)):
            raise UserError(f"engine shapes of {name} are not ordered min <= opt <= max ({lo}, {opt}, {hi})", _FIX)
        out[name] = {"min": lo, "opt": opt, "max": hi}
    return out


def describe(shapes: Shapes) -> str:
    return ";".join(f"{n}:" + ",".join("x".join(map(str, s[k])) for k in ("min", "opt", "max"))
                    for n, s in sorted(shapes.items()))
