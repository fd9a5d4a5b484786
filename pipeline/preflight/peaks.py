"""Peak dense FLOP/s of common accelerators, for MFU (achieved / peak).

Vendor datasheet figures, dense (no 2:4 sparsity), per device: ``bf16`` and ``tf32`` on tensor
cores, ``fp32`` on the CUDA cores. fp32 training on Ampere and newer runs its convolutions as
TF32 (``torch.backends.cudnn.allow_tf32`` is on by default), so fp32 MFU is stated against the
TF32 peak there. A device not in the table gets no MFU and says so.
"""

from __future__ import annotations

# name fragment (lower case, as in torch.cuda.get_device_name) -> TFLOP/s
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "h200": {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9},
    "h100 sxm": {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9},
    "h100 80gb hbm3": {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9},  # the SXM part's name
    "h100 pcie": {"bf16": 756.0, "tf32": 378.0, "fp32": 51.2},
    "h100 nvl": {"bf16": 835.0, "tf32": 417.5, "fp32": 60.0},
    "gh200": {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9},
    "a100": {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5},
    "a800": {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5},
    "l40s": {"bf16": 362.1, "tf32": 183.0, "fp32": 91.6},
    "l4": {"bf16": 121.0, "tf32": 60.0, "fp32": 30.3},
    "a10g": {"bf16": 70.0, "tf32": 35.0, "fp32": 31.2},
    "a10": {"bf16": 125.0, "tf32": 62.5, "fp32": 31.2},
    "rtx 4090": {"bf16": 165.2, "tf32": 82.6, "fp32": 82.6},
    "rtx a6000": {"bf16": 154.8, "tf32": 77.4, "fp32": 38.7},
    "v100": {"fp32": 15.7},  # no bf16 tensor cores (fp16: 125)
    "t4": {"fp32": 8.1},
}


def lookup(device_name: str) -> tuple[str, dict[str, float]] | None:
    """The table's entry for a device name (the longest matching fragment), or None."""
    name = device_name.lower()
    hits = [k for k in PEAK_TFLOPS if k in name]
    if not hits:
        return None
    key = max(hits, key=len)
    return key, PEAK_TFLOPS[key]


def peak_flops(device_name: str, precision: str, tf32: bool = True) -> tuple[float | None, str]:
    """(peak FLOP/s, what it is) for ``precision`` ("bf16" or "fp32") on the named device;
    (None, why) for unknown devices and precisions the device lacks."""
    hit = lookup(device_name)
    if hit is None:
        return None, f"{device_name!r} is not in the peak table (pipeline/preflight/peaks.py)"
    key, peaks = hit
    kind = "tf32" if precision == "fp32" and tf32 and "tf32" in peaks else precision
    if kind not in peaks:
        return None, f"{key}: no {precision} peak (the device has no {precision} tensor cores)"
    return peaks[kind] * 1e12, f"{key} {kind} dense peak {peaks[kind]:g} TFLOP/s"
