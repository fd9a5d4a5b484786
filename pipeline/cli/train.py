"""``stcnn-train PHASE [--config FILE] [--print-config] [key=value ...]``: one training phase of
the paper's recipe (the same run as ``launch/<phase>.py``, which is what torchrun and deepspeed
start).

    stcnn-train pretrain_tcb --config configs/tiny/pretrain_tcb.yaml
    stcnn-train pretrain_ssb --print-config data.lake=/lake     # the resolved config, keys
    torchrun --nproc_per_node=8 launch/pretrain_tcb.py          # the same phase on 8 ranks
"""

from __future__ import annotations

import sys

from pipeline.cli import common
from pipeline.train.loop import NonFiniteLossError
from pipeline.train.runner import USER_ERRORS
from pipeline.train.runner import main as run_main

NAME = "stcnn-train"

# phase command -> (runner phase, default config, what it trains)
PHASES = {
    "pretrain_tcb": ("gan", "configs/pretrain_tcb.yaml",
                     "Adversarial pretraining of the temporal coherence branch (G and D)"),
    "pretrain_ssb": ("segmentation", "configs/pretrain_ssb.yaml",
                     "Pretraining of the spatial segmentation branch"),
    "train_offline": ("alternating", "configs/train_offline.yaml",
                      "Alternating offline training of both branches"),
}


def _fix(prog: str) -> str:
    return (f"correct the file or setting it names (`{prog} --print-config [--config FILE] "
            "[key=value ...]` shows the resolved config and its valid keys)")


@common.command(NAME)
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PHASES:
        phase, config, what = PHASES[argv[0]]
        prog = f"{NAME} {argv[0]}"
        parser = common.parser(NAME, what, prog=prog)
        try:
            return run_main(phase, config, what, argv[1:], parser=parser)
        except USER_ERRORS as exc:
            return common.fail(NAME, exc, _fix(prog))
        except NonFiniteLossError as exc:         # the training diverged: no traceback either
            common.fail(NAME, exc, "lower optim.lr and start the run again")
            return 1
    phases = "\n".join(f"  {cmd:<14}  {what}\n  {'':<14}  (default config: {config})"
                        for cmd, (_, config, what) in PHASES.items())
    p = common.parser(NAME, __doc__, epilog=f"phases:\n{phases}\n\n"
                      f"`{NAME} PHASE --help` shows a phase's options.")
    p.add_argument("phase", choices=list(PHASES), help="the training phase to run")
    p.add_argument("args", nargs="*", default=[], metavar="OPTION",
                   help="the phase's options: [--config FILE] [--print-config] [key=value ...]")
    a = p.parse_args(argv)          # --help, --version, or a usage error (no phase first)
    return main([a.phase, *a.args])
