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
from pipeline.core.errors import PipelineError
from pipeline.train.registry import PHASES, by_command, commands
from pipeline.train.runner import main as run_main

NAME = "stcnn-train"


def _fix(prog: str) -> str:
    return (f"correct the file or setting it names (`{prog} --print-config [--config FILE] "
            "[key=value ...]` shows the resolved config and its valid keys)")


@common.command(NAME)
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in commands():
        spec = by_command(argv[0])
        prog = f"{NAME} {argv[0]}"
        parser = common.parser(NAME, spec.description, prog=prog)
        try:
            return run_main(spec.name, spec.config, spec.description, argv[1:], parser=parser)
        except PipelineError as exc:     # the phase's own fix where the error names none
            return common.fail(NAME, exc, _fix(prog))
    phases = "\n".join(f"  {s.command:<14}  {s.description}\n  {'':<14}  (default config: "
                        f"{s.config})" for s in PHASES.values())
    p = common.parser(NAME, __doc__, epilog=f"phases:\n{phases}\n\n"
                      f"`{NAME} PHASE --help` shows a phase's options.")
    p.add_argument("phase", choices=commands(), help="the training phase to run")
    p.add_argument("args", nargs="*", default=[], metavar="OPTION",
                   help="the phase's options: [--config FILE] [--print-config] [key=value ...]")
    a = p.parse_args(argv)          # --help, --version, or a usage error (no phase first)
    return main([a.phase, *a.args])
