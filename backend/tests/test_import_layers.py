"""The layers of backend/workorder, read from the source with ast (nothing is imported):

- core is the ground floor: it imports no domain app;
- every app imports only the apps below it (ALLOWED);
- no import cycle between apps, nor between modules.

Every import counts: absolute and relative ones, at module level and inside functions or methods.
The modules directly in workorder/ (settings, urls, the entry points) form the project layer on top:
they may import any app, and no app imports them.
"""

from __future__ import annotations

import ast
import itertools
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "workorder"
SOURCE = Path(__file__).resolve().parents[1] / PACKAGE
PROJECT = "(project)"  # the modules directly in workorder/
DOMAIN_APPS = {"accounts", "catalog", "production", "notifications", "statistics"}

# Bottom to top: core; accounts and catalog; production; notifications (listens to production's events);
# statistics (reads production); backup stands beside them and uses core's environment helpers only.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "accounts": {"core"},
    "catalog": {"core"},
    "production": {"core", "accounts", "catalog"},
    "notifications": {"core", "accounts", "production"},
    "statistics": {"core", "accounts", "catalog", "production"},
    "backup": {"core"},
}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (a module of the package, resolved)
    line: int
    in_function: bool

    def where(self, root: Path) -> str:
        scope = "inside a function" if self.in_function else "at module level"
        return f"{self.source} imports {self.target} ({module_path(self.source, root)}:{self.line}, {scope})"


def module_path(module: str, root: Path) -> str:
    relative = module.split(".")[1:]
    candidate = root.joinpath(*relative).with_suffix(".py") if relative else root / "__init__.py"
    if not candidate.exists():
        candidate = root.joinpath(*relative, "__init__.py")
    return str(candidate.relative_to(root.parent))


def modules(root: Path, package: str = PACKAGE) -> dict[str, tuple[Path, bool]]:
    """module name -> (file, is_package)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        found[".".join(parts)] = (path, is_package)
    return found


def _resolve(name: str, known) -> str | None:
    """The longest known module that `name` (a module or a name inside one) refers to."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, known):
        self.module, self.known = module, known
        self.package = module if is_package else module.rpartition(".")[0]
        self.depth = 0
        self.imports: list[Import] = []

    def _scoped(self, node):
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _scoped

    def _add(self, name: str | None, node) -> None:
        target = _resolve(name, self.known) if name else None
        if target and target != self.module:
            self.imports.append(Import(self.module, target, node.lineno, self.depth > 0))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package.split(".")
            base = base[: len(base) - (node.level - 1)]
            origin = ".".join(base + ([node.module] if node.module else []))
        else:
            origin = node.module or ""
        for alias in node.names:
            # `from pkg import mod` imports the module pkg.mod; `from mod import name` the module mod
            submodule = f"{origin}.{alias.name}"
            self._add(submodule if submodule in self.known else origin, node)


def collect_imports(root: Path = SOURCE, package: str = PACKAGE) -> list[Import]:
    known = modules(root, package)
    found: list[Import] = []
    for name, (path, is_package) in known.items():
        collector = _Collector(name, is_package, known)
        collector.visit(ast.parse(path.read_text(), filename=str(path)))
        found.extend(collector.imports)
    return found


def app_of(module: str, root: Path = SOURCE) -> str:
    """The app (sub-package of workorder) a module belongs to, or PROJECT."""
    parts = module.split(".")
    if len(parts) == 1 or (len(parts) == 2 and not (root / parts[1] / "__init__.py").exists()):
        return PROJECT
    return parts[1]


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one node (Tarjan), as a path that closes."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(edges.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(_closing_path(sorted(component), edges))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return components


def _closing_path(component: list[str], edges: dict[str, set[str]]) -> list[str]:
    """A path from the component's first node back to itself, for the message."""
    members, start = set(component), component[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for successor in sorted(edges.get(node, ())):
            if successor == start:
                return paths[node] + [start]
            if successor in members and successor not in paths:
                paths[successor] = paths[node] + [successor]
                queue.append(successor)
    return component + [start]


def layer_violations(imports: list[Import], root: Path = SOURCE) -> list[str]:
    problems = []
    for item in imports:
        source, target = app_of(item.source, root), app_of(item.target, root)
        if source == target or source == PROJECT:
            continue
        if target == PROJECT:
            problems.append(f"{item.where(root)}: no app imports the project modules (settings, urls, ...)")
        elif source == "core" and target in DOMAIN_APPS:
            problems.append(f"{item.where(root)}: core is the ground floor and imports no domain app; "
                            "let the app register itself with core instead (e.g. core.metrics.register_gauges)")
        elif target not in ALLOWED.get(source, set()):
            allowed = ", ".join(sorted(ALLOWED.get(source, set()))) or "nothing"
            problems.append(f"{item.where(root)}: {source} may import {allowed}, not {target}")
    return problems


def cycle_report(imports: list[Import], key, kind: str, root: Path = SOURCE) -> list[str]:
    edges: dict[str, set[str]] = {}
    evidence: dict[tuple[str, str], Import] = {}
    for item in imports:
        source, target = key(item.source), key(item.target)
        if source != target:
            edges.setdefault(source, set()).add(target)
            evidence.setdefault((source, target), item)
    report = []
    for cycle in find_cycles(edges):
        steps = [f"  {evidence[pair].where(root)}" for pair in itertools.pairwise(cycle)]
        report.append(f"import cycle between {kind}: {' -> '.join(cycle)}\n" + "\n".join(steps))
    return report


# --- the tests ------------------------------------------------------------------------------------
def test_the_analysis_sees_the_package():
    imports = collect_imports()
    pairs = {(i.source, i.target) for i in imports}
    assert len(modules(SOURCE)) > 50
    # absolute, relative and in-function imports are all resolved to modules of the package
    assert ("workorder.production.services", "workorder.production.states") in pairs
    assert ("workorder.notifications.handlers", "workorder.production.events") in pairs
    assert any(i.source == "workorder.production.apps" and i.target == "workorder.core.metrics" and i.in_function
               for i in imports)


def test_core_imports_no_domain_app():
    problems = [p for p in layer_violations(collect_imports()) if p.split(" imports ")[0].startswith("workorder.core.")]
    assert not problems, "\n".join(problems)


def test_apps_import_only_the_apps_below_them():
    problems = layer_violations(collect_imports())
    assert not problems, "\n".join(problems)


def test_no_import_cycle_between_apps():
    report = cycle_report(collect_imports(), app_of, "apps")
    assert not report, "\n\n".join(report)


def test_no_import_cycle_between_modules():
    report = cycle_report(collect_imports(), lambda module: module, "modules")
    assert not report, "\n\n".join(report)


def test_every_app_is_in_the_layering():
    apps = {path.name for path in SOURCE.iterdir() if (path / "__init__.py").exists()}
    assert apps == set(ALLOWED), f"apps without a layer: {sorted(apps - set(ALLOWED))}; gone: {sorted(set(ALLOWED) - apps)}"


def test_the_checks_catch_a_core_import_and_cycles(tmp_path):
    """The analysis on a small made-up package: a core module importing a domain app inside a function,
    and two modules of different apps importing each other (one of them relatively)."""
    root = tmp_path / PACKAGE
    files = {
        "__init__.py": "",
        "core/__init__.py": "",
        "core/metrics.py": "def collect():\n    from workorder.production.models import Task\n",
        "production/__init__.py": "",
        "production/models.py": "from ..notifications import services\n",
        "notifications/__init__.py": "",
        "notifications/services.py": "import workorder.production.models\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    imports = collect_imports(root)
    assert {(i.source, i.target, i.in_function) for i in imports} == {
        ("workorder.core.metrics", "workorder.production.models", True),
        ("workorder.production.models", "workorder.notifications.services", False),
        ("workorder.notifications.services", "workorder.production.models", False),
    }
    violations = layer_violations(imports, root)
    assert any("core is the ground floor" in v and "workorder/core/metrics.py:2, inside a function" in v
               for v in violations), violations
    modules_report = cycle_report(imports, lambda module: module, "modules", root)
    assert len(modules_report) == 1
    assert modules_report[0].splitlines()[0] == ("import cycle between modules: workorder.notifications.services "
                                                 "-> workorder.production.models -> workorder.notifications.services")
    apps_report = cycle_report(imports, lambda module: app_of(module, root), "apps", root)
    assert [report.splitlines()[0] for report in apps_report] == [
        "import cycle between apps: notifications -> production -> notifications"]
