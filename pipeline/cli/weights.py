"""Write the ImageNet weight files the model configs' ``weights`` keys name.

    stcnn-weights export resnet101 --out /w/resnet101.pth         # temporal/spatial.backbone.weights
    stcnn-weights export inception_v3 --out /w/inception_v3.pth   # discriminator.weights

The weights are torchvision's (``ResNet101_Weights.IMAGENET1K_V2``,
``Inception_V3_Weights.IMAGENET1K_V1``): downloaded, hash-checked, into torch's hub cache
(``$TORCH_HOME``), or taken from it; the file is the torchvision model's state_dict, written
atomically, which is what the model code loads. Without internet, export on a machine that has
it and copy the file, or pass ``--from-state-dict`` with torchvision's own ``.pth``.
``--random-init`` writes torchvision's randomly initialised model instead: for tests and for
trying the plumbing on an air-gapped machine, never for training.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.cli import common
from pipeline.core.errors import PipelineError
from pipeline.model.imagenet_weights import ARCHS, enum_name

NAME = "stcnn-weights"


def build_parser():
    p = common.parser(NAME, __doc__)
    sub = p.add_subparsers(dest="action", required=True, metavar="export")
    e = sub.add_parser("export", help="write one weights file", description=__doc__,
                       formatter_class=common.HelpFormatter, command=NAME)
    e.add_argument("arch", choices=sorted(ARCHS), help="the network: "
                   + ", ".join(f"{a} ({enum_name(a)})" for a in sorted(ARCHS)))
    e.add_argument("--out", required=True, type=Path, help="the .pth file to write")
    src = e.add_mutually_exclusive_group()
    src.add_argument("--from-state-dict", type=Path, metavar="FILE",
                     help="take the tensors from this torchvision state_dict (air-gapped "
                          "machines) instead of downloading")
    src.add_argument("--random-init", action="store_true",
                     help="torchvision's random initialisation, no ImageNet weights (tests, "
                          "air-gapped trials)")
    e.add_argument("--seed", type=int, default=0, help="seed of --random-init")
    e.add_argument("--timeout", type=float, default=60.0,
                   help="seconds a stalled download may wait before it fails")
    return p


def _check_out(out: Path) -> None:
    if out.is_dir():
        raise PipelineError(f"--out {out} is a folder", "name the .pth file to write")
    parent = next((p for p in out.absolute().parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise PipelineError(f"--out {out}: {parent} is not a folder", "pass another --out")


@common.command(NAME)
def main(argv: list[str] | None = None) -> int:
    from pipeline.model import imagenet_weights as iw

    a = build_parser().parse_args(argv)
    _check_out(a.out)
    if a.from_state_dict is not None and not a.from_state_dict.is_file():
        raise PipelineError(f"--from-state-dict {a.from_state_dict}: no such file",
                            f"pass torchvision's {a.arch} .pth file")
    if a.random_init:
        model, source = iw.random_model(a.arch, a.seed), f"random init (seed {a.seed})"
    elif a.from_state_dict is not None:
        model, source = iw.model_from_state_dict(a.arch, a.from_state_dict), str(a.from_state_dict)
    else:
        model, source = iw.imagenet_model(a.arch, a.timeout), enum_name(a.arch)
    iw.save_state_dict(a.out, model)
    print(f"{NAME}: {a.arch} ({source}) -> {a.out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
