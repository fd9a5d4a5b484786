"""Parameters per branch and FLOPs per forward pass of a model config, beside the authors' counts.

    python launch/model_info.py --config configs/model/stcnn.yaml
    python launch/model_info.py --config configs/model/stcnn_code.yaml --json
    python launch/model_info.py --config configs/model/tiny.yaml --height 64 --width 96 \
        spatial.channels=32

Runs on PyTorch's meta device (shapes only): a second or so at 854x480, no weights read.
"""

from __future__ import annotations

import json

from pipeline.cli import common
from pipeline.core.config import load_config
from pipeline.model.config import ModelConfig
from pipeline.model.info import model_summary


def table(summary: dict) -> str:
    rows = [("part", "parameters", "authors' code", "difference", "GFLOPs")]
    for name, p in summary["parts"].items():
        ref = p["authors_code_parameters"]
        diff = p["parameters"] - ref
        rows.append((name, f"{p['parameters']:,}", f"{ref:,}", f"{diff:+,} ({100 * diff / ref:+.2f}%)",
                     f"{p['gflops']:.1f}" if p["gflops"] >= 10 else f"{p['gflops']:.3f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    i = summary["input"]
    lines.append(f"\nFLOPs per forward pass of {i['batch']} x {i['width']}x{i['height']} "
                 f"(delta {i['delta']} previous frames for G); D on G's predicted frame "
                 f"{summary['predicted_frame']}.")
    lines.append(f"Temporal features: {summary['temporal_features']}")
    return "\n".join(lines)


NAME = "stcnn-model-info"


@common.command(NAME)
def main(argv=None) -> int:
    p = common.parser(NAME, __doc__)
    p.add_argument("--config", required=True, help="model config, e.g. configs/model/stcnn.yaml")
    p.add_argument("--height", type=int, default=480, help="input height in pixels")
    p.add_argument("--width", type=int, default=854, help="input width in pixels")
    p.add_argument("--batch", type=int, default=1, help="batch size of the counted forward pass")
    p.add_argument("--json", action="store_true", help="print JSON only")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="model config overrides")
    a = p.parse_args(argv)
    cfg = load_config(ModelConfig, a.config, a.overrides)
    summary = model_summary(cfg, a.height, a.width, a.batch)
    summary["config"] = a.config
    if a.json:
        print(json.dumps(summary, indent=1))
    else:
        print(f"{a.config}\n")
        print(table(summary))
        print("\n" + json.dumps(summary))
    return 0
