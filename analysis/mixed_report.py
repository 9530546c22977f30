"""The profile report's mixed-precision sections, read from the manifest: what each gated pass
found (per-layer drift with ONNX node names, drift against speed as groups fell back)."""
from __future__ import annotations

TOP = 15


def _gated(entry: dict) -> dict | None:
    for p in entry.get("passes", []):
        facts = p.get("facts") or {}
        if facts.get("gate") and facts.get("layer_drift") is not None:
            return facts
    return None


def _num(x, fmt=".4g") -> str:
    return "—" if x is None else format(x, fmt)


def _nodes(nodes: list) -> str:
    shown = ", ".join(f"`{n}`" for n in nodes[:3])
    return shown + (f" (+{len(nodes) - 3} more)" if len(nodes) > 3 else "")


def sections(manifest, variants) -> tuple[dict, dict]:
    """(report extra sections, {variant: top layer rows}) for the gated variants profiled."""
    layers, curve, md = [], [], []
    per_variant = {}
    for name in variants:
        try:
            entry = manifest.variant(name)
        except Exception:  # noqa: BLE001 - a variant missing from the manifest has its own error row
            continue
        facts = _gated(entry)
        if not facts:
            continue
        kept = {k["group"] for k in facts.get("fp32_groups", [])}
        rows = [{**r, "variant": name, "kept_fp32": r["group"] in kept} for r in facts["layer_drift"][:TOP]]
        per_variant[name] = rows
        layers += rows
        curve += [{**c, "variant": name} for c in facts.get("drift_vs_speed", [])]
        gate = facts["gate"]
        md += [f"**{name}**: {gate['text']} (gate inputs: {facts.get('gate_inputs', '?')}, "
               f"{facts.get('gate_evaluations', '?')} builds evaluated)", "",
               "| rank | group | ONNX nodes | drift with it alone FP32 | improvement | SQNR at its output (dB) | kept FP32 |",
               "|---|---|---|---|---|---|---|"]
        for i, r in enumerate(rows, 1):
            md.append(f"| {i} | {r['group']} | {_nodes(r.get('nodes', []))} | {_num(r.get('drift_if_fp32'))} | "
                      f"{_num(r.get('improvement'))} | {_num(r.get('sqnr_db'), '.1f')} | "
                      f"{'yes' if r['kept_fp32'] else ''} |")
        md += ["", "Drift against speed as groups fall back (speed timed during the export, on the gate inputs):", "",
               "| build | groups in FP32 | drift | speed-up vs FP32 | passes |", "|---|---|---|---|---|"]
        for c in facts.get("drift_vs_speed", []):
            md.append(f"| {c['label']} | {c['fp32_groups']} | {_num(c.get('drift'))} | {_num(c.get('speedup'), '.2f')} | "
                      f"{'yes' if c.get('passed') else 'no'} |")
        md.append("")
    if not layers:
        return {}, {}
    return ({"layer_drift": layers, "drift_vs_speed": curve,
             "mixed precision": {"markdown": "\n".join(md)}}, per_variant)
