"""The layering in DESIGN.md "Packages", read from the source with `ast`: every import, including
those inside functions, counts. Fails on a forbidden arrow between packages or an import cycle
between files."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# package -> the packages of ours it may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "adapters": {"core"},
    "worker": {"core", "adapters"},
    "webhooks": {"core", "adapters"},
    "deadletter": {"core", "adapters"},
    "calehr": {"core", "adapters", "worker", "webhooks", "deadletter"},
}


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules(root: Path = ROOT) -> dict[str, Path]:
    return {module_name(p, root): p for pkg in ALLOWED for p in sorted((root / pkg).rglob("*.py"))}


def imports_of(path: Path, modules: dict[str, Path], root: Path = ROOT) -> set[str]:
    """The modules of ours `path` imports; `from pkg import sub` counts as importing pkg.sub."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import a.b.c` of a name inside a module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = all_modules(root)
    return {name: imports_of(path, modules, root) for name, path in modules.items()}


def forbidden_arrows(edges: dict[str, set[str]]) -> list[str]:
    bad = []
    for source, targets in sorted(edges.items()):
        top = source.partition(".")[0]
        for target in sorted(targets):
            other = target.partition(".")[0]
            if other != top and other not in ALLOWED[top]:
                bad.append(f"{source} -> {target} ({top} may import {sorted(ALLOWED[top]) or 'nothing'})")
    return bad


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one file (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(edges.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_packages_import_only_downwards() -> None:
    assert forbidden_arrows(graph()) == []


def test_no_import_cycle_between_files() -> None:
    assert cycles(graph()) == []


def test_every_package_is_known() -> None:
    """A new top-level package must be placed in ALLOWED (and in pyproject's packages)."""
    ours = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "bench"}
    assert ours == set(ALLOWED)


@pytest.mark.parametrize(("source", "line", "rule"), [
    ("core/config.py", "from worker import tasks", "core may import nothing"),
    ("adapters/hl7v2/siu.py", "import webhooks.context", "adapters may import ['core']"),
    ("worker/pipeline.py", "from deadletter.replay import replay", "worker may import"),
    ("webhooks/calcom.py", "from calehr.web import create_app", "webhooks may import"),
])
def test_a_forbidden_arrow_is_reported(tmp_path: Path, source: str, line: str, rule: str) -> None:
    root = _copy_tree(tmp_path)
    target = root / source
    target.write_text(target.read_text("utf-8") + f"\n\ndef _late() -> None:\n    {line}\n", "utf-8")
    bad = forbidden_arrows(graph(root))
    assert len(bad) == 1 and bad[0].startswith(module_name(target, root)) and rule in bad[0]


def test_a_file_cycle_is_reported(tmp_path: Path) -> None:
    root = _copy_tree(tmp_path)
    (root / "worker" / "a_one.py").write_text("from worker import a_two\n", "utf-8")
    (root / "worker" / "a_two.py").write_text("def f():\n    from worker.a_one import x\n", "utf-8")
    assert cycles(graph(root)) == [["worker.a_one", "worker.a_two"]]


def _copy_tree(tmp_path: Path) -> Path:
    for name, path in all_modules().items():
        copy = tmp_path / path.relative_to(ROOT)
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(path.read_text("utf-8"), "utf-8")
        assert name
    return tmp_path


MAX_MODULE_LINES = 400


def test_every_module_is_short() -> None:
    """Short modules with one job: split a module by job before it passes the limit."""
    long = {name: n for name, path in all_modules().items()
            if (n := len(path.read_text("utf-8").splitlines())) > MAX_MODULE_LINES}
    assert long == {}
