#!/usr/bin/env bash
# The GPU path in one command, on a machine with a CUDA device. Installs nothing (the machine may
# have no network): it runs the project's .venv as it is.
#   bash scripts/gpu_check.sh [OUT.json [PYTEST_ARGS...]]   # default runs/gpu_check.json; log: OUT.log
#   bash scripts/gpu_check.sh runs/gpu_check.json -k decode  # one check again
# Runs tests/gpu (pytest --gpu, STCNN_REQUIRE_ALL=1): nvJPEG batch decode against the CPU
# decoder, the device-decode loader against the worker path, a truncated JPEG dropped and counted
# on the device, each training phase in bf16 + channels_last (and the TCB phase decoding its
# JPEGs on the device), SyncBatchNorm under torchrun (2+ GPUs), dist.compile=true on the SSB
# phase, and `launch/preflight.py --device cuda --quick`. Writes one JSON: each check's status,
# seconds and figures (decode differences, steps/s per phase, the preflight JSON embedded).
# Exit 0: every check passed; 1: a check failed or the time limit (STCNN_GPU_CHECK_LIMIT_S,
# default 450 s) was hit; 2: no CUDA device visible (the JSON's status is "no-cuda").
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/gpu_check.json}"
shift || true   # the rest goes to pytest
LOG="${OUT%.json}.log"
PY=.venv/bin/python
LIMIT_S="${STCNN_GPU_CHECK_LIMIT_S:-450}"
START=$(date +%s)
mkdir -p "$(dirname "$OUT")"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# write_json STATUS MESSAGE [DEVICE_JSON]: the report from what $WORK holds (stdlib only).
write_json() {
    STATUS="$1" MESSAGE="$2" DEVICE_JSON="${3:-null}" RC="${RC:-}" OUT="$OUT" LOG="$LOG" WORK="$WORK" \
    START="$START" LIMIT_S="$LIMIT_S" "$PY" - <<'EOF'
import json, os, time
import xml.etree.ElementTree as ET

work, out = os.environ["WORK"], os.environ["OUT"]
device = json.loads(os.environ["DEVICE_JSON"])
figures = {}
try:
    with open(os.path.join(work, "figures.jsonl")) as f:
        for line in f:
            rec = json.loads(line)
            figures.setdefault(rec.pop("test", ""), []).append(rec)
except FileNotFoundError:
    pass
checks = []
junit = os.path.join(work, "junit.xml")
if os.path.exists(junit):
    for case in ET.parse(junit).getroot().iter("testcase"):
        status, message = "passed", None
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                status = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                message = ((el.get("message") or "") + "\n" + (el.text or ""))[-3000:]
                break
        name = case.get("name")
        recs = figures.get(name, [])
        checks.append({"test": name, "status": status, "seconds": round(float(case.get("time", 0)), 2),
                       **({"message": message} if message else {}),
                       **{r.pop("check"): r for r in recs}})
status = os.environ["STATUS"]
if status == "ran":
    bad = [c["test"] for c in checks if c["status"] != "passed"]
    status = "passed" if checks and not bad and os.environ["RC"] == "0" else "failed"
    message = os.environ["MESSAGE"] or ("every check passed" if status == "passed" else
                                        f"failed: {', '.join(bad) or 'no check reported (see the log)'}")
else:
    message = os.environ["MESSAGE"]
summary = {}
for c in checks:
    for key, val in c.items():
        if not isinstance(val, dict):
            continue
        if key == "decode":
            summary["decode"] = {k: {m: v[m] for m in ("max", "mean", "p999", "error") if m in v}
                                 for k, v in val.get("layouts", {}).items()}
        elif key.startswith(("phase_", "sync_bn_", "compile_")):
            summary.setdefault("steps_per_s", {})[key] = val.get("steps_per_s")
        elif key == "preflight":
            summary["preflight_exit"] = val.get("exit")
gpus = (device or {}).get("count", 0)
if status != "no-cuda" and gpus < 2:
    summary["sync_bn"] = f"{gpus} GPU: sync_bn not run"
doc = {"status": status, "message": message, "started": time.strftime(
           "%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(os.environ["START"]))),
       "wall_s": round(time.time() - int(os.environ["START"]), 1),
       "limit_s": int(os.environ["LIMIT_S"]), "device": device, "summary": summary,
       "checks": checks, "log": os.environ["LOG"] if os.path.exists(os.environ["LOG"]) else None}
tmp = out + ".tmp"
with open(tmp, "w") as f:
    json.dump(doc, f, indent=2, default=str)
os.replace(tmp, out)
EOF
}

no_cuda() {
    echo "gpu_check: no CUDA device visible: $1. Run this on a machine with an NVIDIA GPU" \
         "(nothing was run; $OUT says \"no-cuda\")." >&2
    write_json no-cuda "no CUDA device visible: $1"
    exit 2
}

if [ ! -x "$PY" ]; then
    echo "gpu_check: $PY not found: the project's environment must be there (bash scripts/setup.sh" \
         "on a machine with a network, then carry .venv)." >&2
    printf '{"status": "error", "message": "%s not found"}\n' "$PY" > "$OUT"
    exit 1
fi

# STCNN_GPU_TEST_DEVICE=cpu: a dry run of the tests and this report on the CPU (no device probe;
# the "device" decoder is then the CPU's: it checks the checks, not the GPU).
if [ "${STCNN_GPU_TEST_DEVICE:-cuda}" = cpu ]; then
    DEVICE_JSON='{"available": false, "count": 0, "dry_run": "cpu"}'
else
    # fast answers first (no torch import): every GPU hidden, or no NVIDIA driver at all
    if [ "${CUDA_VISIBLE_DEVICES+set}" = set ] && { [ -z "$CUDA_VISIBLE_DEVICES" ] || [ "$CUDA_VISIBLE_DEVICES" = "-1" ]; }; then
        no_cuda "CUDA_VISIBLE_DEVICES='$CUDA_VISIBLE_DEVICES' hides every GPU"
    fi
    if command -v nvidia-smi > /dev/null 2>&1; then
        nvidia-smi -L 2>/dev/null | grep -q "^GPU" || no_cuda "nvidia-smi -L lists no GPU"
    elif ! ls /dev/nvidia[0-9]* > /dev/null 2>&1 && [ ! -e /proc/driver/nvidia/version ]; then
        no_cuda "no NVIDIA driver (no nvidia-smi, no /dev/nvidia*)"
    fi
    # then what torch sees
    DEVICE_JSON=$(timeout 180 "$PY" - 2>"$WORK/probe.err" <<'EOF'
import json, torch, torchvision
ok = torch.cuda.is_available()
n = torch.cuda.device_count() if ok else 0
print(json.dumps({"available": ok, "count": n,
                  "names": [torch.cuda.get_device_name(i) for i in range(n)],
                  "torch": torch.__version__, "torchvision": torchvision.__version__,
                  "cuda": torch.version.cuda,
                  "cudnn": torch.backends.cudnn.version() if ok else None,
                  "nccl": ".".join(map(str, torch.cuda.nccl.version())) if ok else None}))
EOF
    ) || DEVICE_JSON=""
    ERR=$(tail -n 1 "$WORK/probe.err" | cut -c 1-300)
    if [ -z "$DEVICE_JSON" ]; then
        no_cuda "torch could not be asked${ERR:+ ($ERR)}"
    fi
    case "$DEVICE_JSON" in
        *'"available": true'*) ;;
        *) no_cuda "torch.cuda.is_available() is False${ERR:+ ($ERR)}" ;;
    esac
fi
echo "gpu_check: $DEVICE_JSON" >&2

# The checks: one pytest run, bounded; SIGINT at the limit still writes the junit report.
STCNN_REQUIRE_ALL=1 STCNN_GPU_CHECK_FIGURES="$WORK/figures.jsonl" \
    timeout -s INT -k 30 "$LIMIT_S" "$PY" -m pytest tests/gpu -q -p no:cacheprovider --gpu \
    --timeout=420 --junitxml="$WORK/junit.xml" "$@" > "$LOG" 2>&1
RC=$?
tail -n 25 "$LOG" >&2
MESSAGE=""
if [ "$RC" -eq 124 ] || [ "$RC" -eq 137 ]; then
    MESSAGE="time limit of ${LIMIT_S} s reached: the checks not listed did not run (see $LOG)"
elif [ "$RC" -ne 0 ] && [ "$RC" -ne 1 ]; then
    MESSAGE="pytest ended with exit status $RC (see $LOG)"
fi
write_json ran "$MESSAGE" "$DEVICE_JSON"
STATUS=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["status"])' "$OUT")
echo "gpu_check: $STATUS: $OUT" >&2
[ "$STATUS" = passed ] && [ "$RC" -eq 0 ]
