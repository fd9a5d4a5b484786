"""The layout holds what docs/architecture.md says: every module says its one job, the package
maps in README.md and docs/architecture.md are generated from those docstrings and up to date,
no import cycle (function-level imports included, so none hides one), packages import only
downward, no file much over 400 lines without saying why, and no ``sys.path`` editing."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "pipeline"

# Which packages each package may import (docs/architecture.md, "Import floors").
ALLOWED = {
    "core": set(),
    "sources": {"core"},
    "synthetic": {"core", "sources"},
    "lake": {"core", "sources"},
    "evaluation": {"core", "sources"},
    "loading": {"core", "lake"},
    "model": {"core"},
    "tracking": {"core"},
    "inference": {"core", "loading", "model", "train"},
    "train": {"core", "lake", "loading", "model", "tracking"},
    "jobs": {"core", "sources", "synthetic", "lake", "loading", "model", "tracking", "train",
             "inference", "evaluation"},
    "preflight": {"core", "sources", "synthetic", "lake", "loading", "model", "train",
                  "inference"},
    "cli": {"core", "sources", "synthetic", "lake", "loading", "model", "tracking", "train",
            "inference", "evaluation", "jobs", "preflight"},
}
LONG_FILE = 440   # "no file over ~400 lines unless one job justifies it"


def _modules() -> dict[str, Path]:
    out = {}
    for f in PACKAGE.rglob("*.py"):
        parts = list(f.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


MODULES = _modules()


def _imports(path: Path) -> list[str]:
    """Every pipeline module ``path`` imports, wherever the import statement is."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] == "pipeline":
            for a in node.names:
                full = f"{node.module}.{a.name}"
                out.append(full if full in MODULES else node.module)
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name.split(".")[0] == "pipeline"]
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            out.append(f"<relative import in {path}>")
    return out


def _package_map():
    spec = importlib.util.spec_from_file_location("package_map", REPO / "scripts" / "package_map.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_module_says_its_job_in_its_first_docstring_line():
    missing = [str(f.relative_to(REPO)) for f in MODULES.values()
               if not (ast.get_docstring(ast.parse(f.read_text(encoding="utf-8"))) or "").strip()]
    assert not missing, f"modules without a docstring: {missing}"


@pytest.mark.parametrize("target", ["README.md", "docs/architecture.md"])
def test_package_map_is_generated_from_the_docstrings(target):
    pm = _package_map()
    tag, make = pm.TARGETS[target]
    text = (REPO / target).read_text(encoding="utf-8")
    assert pm.section(text, tag) == make(), (
        f"{target}: the package map is stale; run `python scripts/package_map.py --write`")


def test_no_relative_imports_and_no_import_cycle():
    graph = {m: {t for t in _imports(f) if t != m} for m, f in MODULES.items()}
    relative = sorted(t for ts in graph.values() for t in ts if t.startswith("<"))
    assert not relative, relative
    # a package imports its own __init__ when a submodule is imported: that edge is Python's,
    # not a cycle of ours, as long as __init__ only re-exports
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(m: str, stack: list[str]) -> bool:
        state[m] = 1
        for t in sorted(graph.get(m, ())):
            if t not in MODULES:
                continue
            if state.get(t) == 1:
                cycle.extend(stack[stack.index(t):] + [m, t] if t in stack else [m, t])
                return True
            if state.get(t) is None and visit(t, stack + [t]):
                return True
        state[m] = 2
        return False

    for m in sorted(graph):
        if state.get(m) is None and visit(m, [m]):
            break
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_packages_import_only_downward():
    bad = []
    for m, f in MODULES.items():
        parts = m.split(".")
        if len(parts) < 2:
            continue
        for t in _imports(f):
            tp = t.split(".")
            if len(tp) >= 2 and tp[1] != parts[1] and tp[1] not in ALLOWED[parts[1]]:
                bad.append(f"{m} imports {t}")
    assert not bad, "imports against the floors of docs/architecture.md:\n" + "\n".join(bad)


def test_no_long_file_without_a_reason():
    long = []
    for f in MODULES.values():
        text = f.read_text(encoding="utf-8")
        if text.count("\n") > LONG_FILE:
            doc = ast.get_docstring(ast.parse(text)) or ""
            if "One job, long because" not in doc:
                long.append(f"{f.relative_to(REPO)} ({text.count(chr(10))} lines)")
    assert not long, ("files over ~400 lines whose docstring does not say why "
                      f"('One job, long because ...'): {long}")


def test_no_sys_path_editing():
    edits = []
    for folder in ("pipeline", "launch"):
        for f in (REPO / folder).rglob("*.py"):
            if "sys.path.insert" in f.read_text(encoding="utf-8") \
                    or "sys.path.append" in f.read_text(encoding="utf-8"):
                edits.append(str(f.relative_to(REPO)))
    assert not edits, edits


def test_console_commands_point_at_callable_mains():
    import importlib
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"stcnn-preprocess", "stcnn-train", "stcnn-segment", "stcnn-evaluate",
            "stcnn-demo"} <= set(scripts)
    for name, target in scripts.items():
        module, _, func = target.partition(":")
        assert callable(getattr(importlib.import_module(module), func)), name
    # every launch/ script calls one of them
    for script in (REPO / "launch").glob("*.py"):
        text = script.read_text(encoding="utf-8")
        assert "from pipeline.cli." in text, script
