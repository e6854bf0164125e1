"""The layout's rules: lib/ is packages by domain with no import cycle, and no Streamlit."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIB = ROOT / "lib"
DOMAINS = {"store", "catalog", "data", "run", "review", "drift", "judge", "redteam", "governance", "release", "cli"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in LIB.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(path: Path, known: dict[str, Path]) -> set[str]:
    """lib modules this file imports anywhere (inside functions too, outside TYPE_CHECKING blocks)."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                found.add(name if name in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in known}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path (first module repeated at the end), or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_module_of_lib_imports_a_module_that_imports_it_back() -> None:
    known = _modules()
    graph = {name: _imports(path, known) - {name} for name, path in known.items()}
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_lib_is_packages_by_domain_and_imports_no_streamlit() -> None:
    top = {p.stem for p in LIB.glob("*.py")} - {"__init__", "__main__"}
    assert top == {"errors"}, f"top-level modules of lib/ belong in a domain package: {sorted(top)}"
    packages = {p.name for p in LIB.iterdir() if (p / "__init__.py").is_file()}
    assert packages == DOMAINS, f"unexpected packages: {sorted(packages ^ DOMAINS)}"
    for name in packages:
        assert ast.get_docstring(ast.parse((LIB / name / "__init__.py").read_text())), f"lib/{name} says what it owns"
    users = [str(p.relative_to(ROOT)) for p in LIB.rglob("*.py")
             if any(isinstance(n, (ast.Import, ast.ImportFrom)) and "streamlit" in ast.unparse(n)
                    for n in ast.walk(ast.parse(p.read_text())))]
    assert not users, f"lib/ imports streamlit: {users}"
