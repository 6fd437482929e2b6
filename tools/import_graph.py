#!/usr/bin/env python
"""The import graph of the `cbir` package: cycles, imports that climb the layers, and
the module counts of docs/architecture.md.

    python tools/import_graph.py [--json] [--edges MODULE]

Every `import` and `from ... import` inside cbir/ counts, wherever it stands: at module
level, inside a function (a lazy import) or under `if TYPE_CHECKING:`. An import of
`a.b.c` also imports the packages `a.b` and `a` (their `__init__` runs first), so it
adds those edges too, except the root `cbir` (whose `__init__` imports nothing until a
name is used) and the importer's own packages (initialised before it). A cycle is a
strongly connected component of two or more modules. Layers are the ranks in LAYERS
below: a module may import its own layer or a lower one.
Exit status 1 when there is a cycle or a climbing import.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cbir"

#: Layers, lowest first: a module may import modules of its own layer or lower ones.
#: The first matching prefix names a module's layer (docs/architecture.md).
LAYERS: list[list[str]] = [
    ["cbir.errors", "cbir.progress", "cbir.timing", "cbir.files", "cbir.specs", "cbir.registry"],
    ["cbir.recipes"],
    ["cbir.slides", "cbir.index"],
    ["cbir.nn"],
    ["cbir.delf", "cbir.descriptors", "cbir.encoders"],
    ["cbir.pipeline"],
    ["cbir.describe"],
    ["cbir.storage"],
    ["cbir.search"],
    ["cbir.distributed"],
    ["cbir.api", "cbir.indexer", "cbir.info", "cbir.nn.train", "cbir.eval", "cbir.export"],
    ["cbir.upgrade", "cbir.demo"],
    ["cbir.serve", "cbir.cli", "cbir"],
]


def layer_of(module: str) -> int:
    """The rank of the module's layer (longest matching prefix; unlisted: the top)."""
    best, rank = -1, len(LAYERS)
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), i
    return rank


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under cbir/."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _targets(name: str, importer: str, known: dict[str, Path]) -> list[str]:
    """The cbir modules that importing `name` from `importer` runs: it and its parent
    packages, but for those the importer lies in (they are initialised before it)."""
    out = []
    parts = name.split(".")
    for i in range(2, len(parts) + 1):
        prefix = ".".join(parts[:i])
        inside = importer.startswith(prefix + ".")
        if prefix in known and (prefix == name or not inside):
            out.append(prefix)
    return out


def imports(module: str, path: Path, known: dict[str, Path]) -> list[tuple[str, int, str]]:
    """(imported cbir module, line, where) for every import in the file; where is
    "module", "function" or "type-checking"."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, int, str]] = []

    def visit(node: ast.AST, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = where
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                inner = "function" if where == "module" else where
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for stmt in child.body:
                    visit_stmt(stmt, "type-checking")
                for stmt in child.orelse:
                    visit_stmt(stmt, where)
                continue
            visit_stmt(child, inner) if isinstance(child, (ast.Import, ast.ImportFrom)) else None
            visit(child, inner)

    def visit_stmt(stmt: ast.AST, where: str) -> None:
        names: list[str] = []
        if isinstance(stmt, ast.Import):
            names = [a.name for a in stmt.names]
        elif isinstance(stmt, ast.ImportFrom):
            base = stmt.module or ""
            if stmt.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (stmt.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in stmt.names
            ]
        else:
            visit(stmt, where)
            return
        for name in names:
            if name == "cbir" or name.startswith("cbir."):
                for target in _targets(name, module, known):
                    if target != module:
                        found.append((target, stmt.lineno, where))

    visit(tree, "module")
    return found


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with two or more nodes."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(10000)

    def connect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return out


def report() -> dict[str, object]:
    known = modules()
    graph: dict[str, set[str]] = defaultdict(set)
    edges: list[tuple[str, str, int, str]] = []
    for module, path in known.items():
        graph[module]
        for target, line, where in sorted(set(imports(module, path, known))):
            graph[module].add(target)
            edges.append((module, target, line, where))
    climbs = []
    for src, dst, line, where in edges:
        # a package's __init__ may gather what lies below it; its children import it
        # implicitly, which is no climb
        if dst.startswith(src + ".") or src.startswith(dst + "."):
            continue
        if layer_of(dst) > layer_of(src):
            climbs.append(
                f"{src} (layer {layer_of(src)}) line {line} [{where}] -> "
                f"{dst} (layer {layer_of(dst)})"
            )
    top = sorted(
        p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py")
    )
    sizes = {m: sum(1 for _ in p.open()) for m, p in known.items()}
    return {
        "modules": len(known),
        "import_edges": len(edges),
        "cycles": strongly_connected(graph),
        "climbing_imports": climbs,
        "top_level_modules": len(top),
        "top_level": top,
        "over_400_lines": {m: n for m, n in sizes.items() if n > 400},
        "largest": max(sizes.items(), key=lambda kv: kv[1]),
        "graph": {m: sorted(t) for m, t in graph.items()},
        "edges": edges,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--edges", help="List the imports of this module and into it.")
    args = parser.parse_args()
    out = report()
    if args.edges:
        for src, dst, line, where in out["edges"]:  # type: ignore[union-attr]
            if args.edges in (src, dst):
                print(f"{src}:{line} [{where}] -> {dst}")
        return
    out.pop("edges")
    graph = out.pop("graph")
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        print(f"{out['modules']} modules, {out['import_edges']} imports of cbir modules")
        print(f"top level of cbir/: {out['top_level_modules']} modules")
        print(
            f"modules over 400 lines: {out['over_400_lines'] or 'none'}; largest {out['largest']}"
        )
        print(f"cycles: {len(out['cycles'])}")  # type: ignore[arg-type]
        for c in out["cycles"]:  # type: ignore[union-attr]
            print("  " + " <-> ".join(c))
            for m in c:
                print(f"    {m} -> {', '.join(t for t in graph[m] if t in c)}")  # type: ignore[index]
        print(f"climbing imports: {len(out['climbing_imports'])}")  # type: ignore[arg-type]
        for c in out["climbing_imports"]:  # type: ignore[union-attr]
            print("  " + c)
    sys.exit(1 if out["cycles"] or out["climbing_imports"] else 0)


if __name__ == "__main__":
    main()
