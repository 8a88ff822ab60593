"""The import graph of cvbench's own modules, read from the source with `ast` (nothing is
imported), and its cycles.

    python scripts/import_graph.py            # every module and what it imports, then the cycles
    python scripts/import_graph.py --cycles   # only the cycles (exit 1 when there is one)
    python scripts/import_graph.py --dot      # Graphviz dot text

Every import counts, at module level or inside a function (a lazy import that closes a circle
is still a circle: each side must know the other). `from a import b` is an edge to `a.b` when
that is a module, else to `a`. The source folders map to the installed names as pyproject.toml
maps them: cvbench/ -> cvbench, baselines/ -> cvbench.baselines, deep/ -> cvbench.deep.
tests/test_imports.py fails on any cycle.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"cvbench": ROOT / "cvbench", "cvbench.baselines": ROOT / "baselines",
            "cvbench.deep": ROOT / "deep"}


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """{dotted module name: source file} of every module of the three source folders."""
    out: dict[str, Path] = {}
    for package, folder in PACKAGES.items():
        folder = root / folder.relative_to(ROOT)
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """The cvbench modules that `module` imports anywhere in its source."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for t in targets:
            while t and t not in known:  # `import cvbench.deep.models as m` -> the module itself
                t = t.rpartition(".")[0]
            if t and t != module:
                out.add(t)
    return out


def graph(root: Path = ROOT) -> dict[str, set[str]]:
    files = module_files(root)
    known = set(files)
    return {m: imports_of(m, p, known) for m, p in files.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for v in sorted(g):
        if v not in index:
            visit(v)
    return sorted(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cycles", action="store_true", help="print only the cycles")
    ap.add_argument("--dot", action="store_true", help="print Graphviz dot text")
    args = ap.parse_args(argv)
    g = graph()
    found = cycles(g)
    if args.dot:
        print("digraph cvbench {")
        for m in sorted(g):
            for t in sorted(g[m]):
                print(f'  "{m}" -> "{t}";')
        print("}")
        return 0
    if not args.cycles:
        for m in sorted(g):
            print(f"{m}: {', '.join(sorted(g[m])) or '-'}")
        print()
    print(f"{len(found)} import cycle(s)" + (":" if found else ""))
    for comp in found:
        print("  " + " <-> ".join(comp))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
