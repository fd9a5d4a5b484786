#!/usr/bin/env bash
# Puts a Docker Compose v2 CLI at DEST/docker-compose (default .venv/bin), for the test that
# resolves docker/compose.yaml with `docker-compose config` (tests/integration/test_docker_lint.py;
# no Docker engine needed). Does nothing when a v2 CLI is already there or on PATH. Called by
# setup.sh.
#
# Where it comes from, first that works (as root, with apt; elsewhere it says what to install):
#   1. the system's own package sources: Ubuntu's docker-compose-v2, or docker-compose when its
#      candidate is 2.x (Debian 13 and later);
#   2. on Debian 12, whose docker-compose is the old Python 1.29: Debian 13's docker-compose
#      (2.x, a Go program that needs only libc6 >= 2.34; Debian 12 has 2.36), fetched from the
#      mirror the system already uses, with a private apt configuration (the system's sources
#      and package database are not touched) and checked against Debian's archive keyring.
# The .deb is unpacked, not installed: only the binary is copied to DEST.
set -euo pipefail
DEST=${1:-.venv/bin}
HINT="install Docker's compose plugin (docker-compose-plugin) or your distribution's docker-compose 2.x"

is_v2() { "$@" version --short 2>/dev/null | grep -Eq '^v?2\.'; }
if is_v2 docker compose || is_v2 docker-compose || { [ -x "$DEST/docker-compose" ] && is_v2 "$DEST/docker-compose"; }; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "setup: note: no Docker Compose v2 CLI (the compose-resolving test skips): $HINT" >&2
    exit 0
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
chmod 755 "$WORK"   # apt's download sandbox user must be able to write here

# fetch_v2 PKG [apt options]: download PKG's .deb into $WORK if its candidate version is 2.x
fetch_v2() {
    local pkg=$1
    shift
    case "$(apt-cache "$@" policy "$pkg" 2>/dev/null | awk '/Candidate:/ {print $2}')" in
        2.*) (cd "$WORK" && apt-get "$@" download -qq "$pkg" >/dev/null 2>&1) ;;
        *) return 1 ;;
    esac
}
fetch_v2 docker-compose-v2 || fetch_v2 docker-compose || true

. /etc/os-release
if ! compgen -G "$WORK/*.deb" >/dev/null && [ "${ID:-}" = debian ] && [ "${VERSION_CODENAME:-}" = bookworm ] \
        && [ -r /usr/share/keyrings/debian-archive-keyring.gpg ]; then
    # the mirror this system's bookworm/main comes from
    MIRROR=$(apt-cache policy 2>/dev/null | awk '$3 == "bookworm/main" && $2 ~ /^https?:/ {print $2; exit}')
    if [ -n "$MIRROR" ]; then
        mkdir -p "$WORK/apt/lists/partial" "$WORK/apt/cache/archives/partial"
        echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR trixie main" \
            > "$WORK/apt/sources.list"
        APT=(-o "Dir::Etc::SourceList=$WORK/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
             -o "Dir::State::Lists=$WORK/apt/lists" -o "Dir::Cache=$WORK/apt/cache")
        echo "setup: fetching Debian 13's docker-compose (2.x) for the compose test"
        apt-get "${APT[@]}" update -qq >/dev/null 2>&1 && fetch_v2 docker-compose "${APT[@]}" || true
    fi
fi

DEB=$(compgen -G "$WORK/*.deb" | head -n 1 || true)
if [ -z "$DEB" ]; then
    echo "setup: WARNING: could not get a Docker Compose v2 CLI (the compose-resolving test skips): $HINT" >&2
    exit 0
fi
dpkg-deb -x "$DEB" "$WORK/x"
BIN=$(find "$WORK/x" -type f -name docker-compose -perm -u+x | head -n 1)
if [ -z "$BIN" ] || ! is_v2 "$BIN"; then
    echo "setup: WARNING: $(basename "$DEB") holds no working Docker Compose v2 CLI: $HINT" >&2
    exit 0
fi
mkdir -p "$DEST"
install -m 755 "$BIN" "$DEST/docker-compose"
echo "setup: ok: $("$DEST/docker-compose" version) at $DEST/docker-compose"
