"""bf16 against fp32: the same phase, seed, initial weights and batches under both precisions,
dropout off in both (a bf16 tensor draws other dropout masks than an fp32 one);
the first step's losses (same weights, same inputs: only the arithmetic differs) must agree
within a relative tolerance; later steps drift apart as the updates differ and are reported."""

from __future__ import annotations


def tolerance(key: str, rtol: float, rtol_d: float) -> float:
    """D's loss (binary cross-entropy of a BatchNorm network on batch statistics) moves most
    with the arithmetic: it gets its own, looser tolerance."""
    return rtol_d if key.startswith("D/") else rtol


def compare_losses(fp32: dict[str, list[float]], bf16: dict[str, list[float]],
                   rtol: float, rtol_d: float) -> dict:
    rows = {}
    for key in sorted(fp32):
        a, b = fp32[key], bf16.get(key, [])
        if not a or not b:
            rows[key] = {"ok": False, "why": "loss missing in one of the runs"}
            continue
        rel = [abs(x - y) / max(abs(x), 1e-8) for x, y in zip(a, b)]
        tol = tolerance(key, rtol, rtol_d)
        rows[key] = {"fp32_first": a[0], "bf16_first": b[0], "rel_first": rel[0],
                     "rel_max_all_steps": max(rel), "rtol": tol, "ok": rel[0] <= tol}
    return {"rtol_first_step": rtol, "rtol_first_step_d": rtol_d, "losses": rows,
            "ok": bool(rows) and all(r["ok"] for r in rows.values())}
