"""The layout holds: imports run one way (no cycles), host tools and firmware never import the
fleet, no fleet file grows past what a reader holds at once, and no module reaches into another's
private names. Read from the source (AST), so nothing is imported and nothing is missed.

PACKAGES lists the import packages the cycle check covers, by source folder; a package joins the
check by adding a line here.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# import name -> source folder (as pyproject's package-dir maps them)
PACKAGES = {
    "fleet": ROOT / "fleet",
    "provisioning": ROOT / "provisioning",
    "polylink_host": ROOT / "firmware" / "host",
    "polylink": ROOT / "firmware" / "polylink",
}
# Folders inside a package's folder that are packages of their own (pyproject's package-dir).
SEPARATE = {ROOT / "firmware" / "host" / "cryptolib"}
# Folders that must never import the fleet: it depends on them, not the other way round.
NEVER_FLEET = [ROOT / "provisioning", ROOT / "firmware"]
MAX_LINES = 600
# Files allowed past MAX_LINES for now, each with the reason; remove an entry when it is split.
LONG_FOR_NOW: dict[str, str] = {}


def _sources(folder: Path):
    for path in sorted(folder.rglob("*.py")):
        if any(s in path.parents for s in SEPARATE) or "node_modules" in path.parts:
            continue
        yield path


def _module_name(package: str, folder: Path, path: Path) -> str:
    parts = list(path.relative_to(folder).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


def _modules() -> dict[str, tuple[Path, bool]]:
    """Every module of PACKAGES: name -> (path, is a package)."""
    out = {}
    for package, folder in PACKAGES.items():
        for path in _sources(folder):
            out[_module_name(package, folder, path)] = (path, path.name == "__init__.py")
    return out


MODULES = _modules()


def _imports(name: str, path: Path, is_package: bool):
    """(line, imported module, imported names) for every import in the file, in functions too."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            yield node.lineno, _absolute(name, is_package, node), [a.name for a in node.names]


def _absolute(name: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The module a `from ... import` names, relative imports resolved against module `name`."""
    if not node.level:
        return node.module or ""
    base = (name if is_package else name.rpartition(".")[0]).split(".")
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _private(n: str) -> bool:
    return n.startswith("_") and not n.startswith("__")


def _targets(module: str, names: list[str]) -> set[str]:
    """The modules of MODULES an import statement depends on."""
    out = set()
    for n in names:
        if f"{module}.{n}" in MODULES:
            out.add(f"{module}.{n}")
        elif module in MODULES:
            out.add(module)
    if not names and module in MODULES:
        out.add(module)
    return out


def _graph() -> dict[str, set[str]]:
    graph = {}
    for name, (path, is_package) in MODULES.items():
        edges = set()
        for _, module, names in _imports(name, path, is_package):
            edges |= _targets(module, names)
        edges.discard(name)
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_layout_check_sees_every_package():
    for package, folder in PACKAGES.items():
        assert (folder / "__init__.py").is_file(), f"{package}: no {folder}/__init__.py"
        assert package in MODULES


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    """Function-local imports count too: an import hidden in a function is still a dependency."""
    cycles = _cycles(_graph())
    assert not cycles, "import cycles (each line: modules importing each other in a circle):\n" + (
        "\n".join(" <-> ".join(c) for c in cycles))


def _floor(module: str) -> str:
    """The unit imports must run one way between: a package's subpackage (fleet.ota), else the
    module itself (fleet.settings)."""
    parts = module.split(".")
    if len(parts) > 2 and f"{parts[0]}.{parts[1]}" in MODULES and MODULES[
            f"{parts[0]}.{parts[1]}"][1]:
        return f"{parts[0]}.{parts[1]}"
    return module


def test_no_import_cycles_between_feature_packages():
    """fleet.ota may import fleet.web or the other way round, never both (through any path)."""
    floors: dict[str, set[str]] = {}
    for module, targets in _graph().items():
        floors.setdefault(_floor(module), set()).update(
            _floor(t) for t in targets if _floor(t) != _floor(module))
    cycles = _cycles(floors)
    assert not cycles, "packages importing each other in a circle:\n" + (
        "\n".join(" <-> ".join(c) for c in cycles))


@pytest.mark.parametrize("folder", NEVER_FLEET, ids=lambda f: str(f.relative_to(ROOT)))
def test_never_imports_the_fleet(folder):
    bad = []
    for path in sorted(folder.rglob("*.py")):
        if "node_modules" in path.parts:
            continue
        for line, module, _ in _imports("", path, False):
            if module == "fleet" or module.startswith("fleet."):
                bad.append(f"{path.relative_to(ROOT)}:{line}: {module}")
    assert not bad, f"{folder.relative_to(ROOT)} imports the fleet:\n" + "\n".join(bad)


def test_fleet_files_are_short():
    long = []
    for path in _sources(PACKAGES["fleet"]):
        rel = path.relative_to(ROOT).as_posix()
        lines = len(path.read_text().splitlines())
        if lines > MAX_LINES and rel not in LONG_FOR_NOW:
            long.append(f"{rel}: {lines} lines")
    assert not long, f"over {MAX_LINES} lines; split by what belongs together:\n" + "\n".join(long)


def _private_uses(name: str, path: Path, is_package: bool):
    """`from m import _x` and `m._x` where m is another module: a private name used from outside."""
    tree = ast.parse(path.read_text(), str(path))
    modules = {}  # local name -> module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    modules[alias.asname] = alias.name
                else:
                    modules[alias.name.partition(".")[0]] = alias.name.partition(".")[0]
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        module = _absolute(name, is_package, node)
        for alias in node.names:
            full = f"{module}.{alias.name}"
            if _private(alias.name) and _is_project_module(module):
                yield node.lineno, full
            elif _is_project_module(full):
                modules[alias.asname or alias.name] = full
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in modules and _private(node.attr)
                and _is_project_module(modules[node.value.id])):
            yield node.lineno, f"{modules[node.value.id]}.{node.attr}"


def _is_project_module(full: str) -> bool:
    """A module of this repository (a package's folder holds it), not a class or function."""
    top, _, rest = full.partition(".")
    folders = dict(PACKAGES, polylink=ROOT / "firmware" / "polylink")
    if top not in folders:
        return False
    base = folders[top].joinpath(*rest.split(".")) if rest else folders[top]
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def test_no_module_uses_another_modules_private_names():
    bad = []
    for name, (path, is_package) in MODULES.items():
        for line, used in _private_uses(name, path, is_package):
            if used.rpartition(".")[0] != name:
                bad.append(f"{path.relative_to(ROOT)}:{line}: {used}")
    assert not bad, "private names used from another module (make them public or move them " \
                    "to the module that needs them):\n" + "\n".join(bad)
