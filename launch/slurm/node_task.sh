#!/bin/bash
# One node's task of train.sbatch (srun starts it once per node): runs the torchrun command it
# is given ("$@") so that SLURM's signals stop the training with a checkpoint instead of killing
# it. Not meant to be run by hand.
#
# What SLURM does with a signal for a job step: slurmstepd sends it to every process of the step
# (this script, torchrun, its worker ranks and their loader workers). So:
#   * SIGUSR1 (train.sbatch passes the time-limit warning on as `kill -USR1 <srun>`, which srun
#     forwards to the step): this script and torchrun ignore it (torchrun inherits the ignore:
#     it installs no handler for USR1, and without one USR1 would end it and its workers); the
#     workers' StopHook catches it, they agree on a step, checkpoint, and exit 0, and so does
#     torchrun.
#   * SIGTERM (pre-emption, `scancel --signal=TERM <job>`): torchrun forwards it to the workers
#     and waits up to TORCH_ELASTIC_SHUTDOWN_TIMEOUT s while they checkpoint and exit (the
#     workers get it from SLURM too; their StopHook only notes it). This script only waits for
#     torchrun: were it to die, SLURM would take the task as ended and kill the step.
# The exit status is torchrun's.
set -uo pipefail
if [ $# -lt 1 ]; then
    echo "usage: $0 torchrun-command [args...] (started by launch/slurm/train.sbatch)" >&2
    exit 2
fi
NODE=${SLURMD_NODENAME:-$(hostname)}
trap '' USR1
trap 'echo "$(date "+%F %T") $NODE: got SIGTERM; torchrun stops the workers with a checkpoint" >&2' TERM
"$@" &
PID=$!
while true; do
    wait "$PID" && rc=0 || rc=$?
    kill -0 "$PID" 2>/dev/null || break     # a trapped signal ends `wait` early
done
exit "$rc"
