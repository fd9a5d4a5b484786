#!/usr/bin/env bash
# Installs everything the project needs into ./.venv. Safe to re-run: it does nothing when the
# environment already matches pyproject.toml.
#   - FFCV builds from source against OpenCV and libjpeg-turbo: as root (or with sudo) this
#     script apt-installs pkg-config libopencv-dev libturbojpeg0-dev; otherwise it says what to run
#     and sets up everything else (FFCV tests then skip, saying why).
#   - As root it also apt-installs slurm-wlm and munge for the single-host SLURM cluster tests,
#     and chromium + chromium-driver for the MLflow UI browser test.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
APT_PKGS="pkg-config libopencv-dev libturbojpeg0-dev"

have_ffcv_libs() {
    command -v pkg-config >/dev/null 2>&1 && pkg-config --exists opencv4 2>/dev/null \
        && { [ -e /usr/include/turbojpeg.h ] || pkg-config --exists libturbojpeg 2>/dev/null; }
}

if ! have_ffcv_libs; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null && SUDO="sudo -n"
    if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; }; then
        echo "setup: installing FFCV's system libraries: $APT_PKGS"
        $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $APT_PKGS >/dev/null
    else
        echo "setup: WARNING: FFCV needs system libraries this script cannot install here." >&2
        echo "setup:   run: sudo apt-get install -y $APT_PKGS   then re-run: bash scripts/setup.sh" >&2
    fi
fi

# As root, apt-install what a group of tests needs ($2: the packages; $1: those tests, for the
# messages); otherwise say what to run (those tests then skip, saying why).
apt_for_tests() {
    local what=$1 pkgs=$2
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
        echo "setup: installing $pkgs for $what"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkgs >/dev/null \
            || echo "setup: WARNING: could not install $pkgs ($what will skip)" >&2
    else
        echo "setup: note: $what skip without: sudo apt-get install -y $pkgs" >&2
    fi
}

# A single-host SLURM cluster (the `slurm` fixture of tests/conftest.py): slurm-wlm + munge.
if ! { command -v slurmctld >/dev/null 2>&1 || [ -x /usr/sbin/slurmctld ]; }; then
    apt_for_tests "the SLURM cluster tests" "slurm-wlm munge"
fi

# A headless browser for the MLflow UI test (tests/integration/test_mlflow_ui_journey.py, with
# selenium from the test extra): Debian's chromium and chromium-driver.
if ! { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; }; then
    apt_for_tests "the MLflow UI test" "chromium chromium-driver"
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PY=.venv/bin/python

# A Docker Compose v2 CLI, to resolve docker/compose.yaml in tests/integration/test_docker_lint.py
# (no Docker engine is needed for `docker compose config`). As root, scripts/install_compose.sh
# puts one in .venv/bin/docker-compose (the system's packages, else Debian 13's docker-compose).
bash scripts/install_compose.sh .venv/bin || true
EXTRAS="test,bench"
have_ffcv_libs && EXTRAS="$EXTRAS,ffcv"
STAMP=".venv/.setup-stamp"
WANT="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16) $EXTRAS"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
    exit 0
fi
echo "setup: installing the project and its Python dependencies into .venv (extras: $EXTRAS)"
# torch's CUDA wheels and their libraries take about 7 GB in .venv; say so before pip runs out.
FREE_MB=$(df -Pm . | awk 'NR==2 {print $4}')
if [ -n "$FREE_MB" ] && [ "$FREE_MB" -lt 9000 ]; then
    echo "setup: WARNING: only ${FREE_MB} MB free on the disk of $(pwd); the install needs about" \
         "7 GB (plus ~2 GB for the tests). Free some space (old run folders, other clones' .venv," \
         "/tmp/pytest-of-$(id -un)) if pip fails with 'No space left on device'." >&2
fi
# --no-cache-dir: pip's cache would hold a second copy of the wheels it builds.
"$PY" -m pip install -q --no-cache-dir --upgrade pip
"$PY" -m pip install -q --no-cache-dir -e ".[$EXTRAS]"
# vos-benchmark (benchmarks/evaluate_vs_vos_benchmark.py and its equality test) without its
# declared opencv-python: that GUI build (libGL) would replace opencv-python-headless's cv2;
# what else it imports comes with the bench extra.
"$PY" -m pip install -q --no-cache-dir --no-deps "vos-benchmark==0.1.0"
echo "$WANT" > "$STAMP"
"$PY" - <<'PYEOF'
import torch, torchvision, webdataset, pyarrow, mlflow
print(f"setup: ok: torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"webdataset {webdataset.__version__}, pyarrow {pyarrow.__version__}, mlflow {mlflow.__version__}")
try:
    import ffcv  # noqa: F401
    print("setup: ok: ffcv")
except Exception as e:  # noqa: BLE001
    print(f"setup: ffcv unavailable ({e}); FFCV tests will skip")
PYEOF
