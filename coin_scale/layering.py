"""The import rules of coin_scale's packages, checked by walking every module's AST.

Packages stand in ranks, and imports run one way, from a higher rank to a lower one:

    face         cli                          (and run_sweep.py beside the package)
    drivers      sweep, bench, report, runtime   plan, open Ray and the pools, collect
    actors       actors                       Ray actors: hold a resource, call the core
    stages       dissect, sae, explain, agent, chain, eval, visualize, training
    foundations  models, probe, llm, storage
    ground       errors, cache, records, accounting, layering (modules at the package's root)

Imports between packages of one rank are allowed as long as no cycle forms. Every import
counts, at the top of a module or inside a function. The core (stages, foundations and the
ground) never imports ``actors`` or ``ray``; the test doubles in ``testing`` are imported by no
production package but ``bench``, which runs against the fake servers on purpose.

``python -m coin_scale.layering`` prints the packages in import order and every break of the
rules with its file and line; ``tests/test_layering.py`` fails on any.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT_PACKAGE = "coin_scale"

RANKS: dict[str, int] = {
    "cli": 5,
    "sweep": 4, "bench": 4, "report": 4, "runtime": 4,
    "actors": 3,
    "testing": 2,
    "dissect": 2, "sae": 2, "explain": 2, "agent": 2, "chain": 2, "eval": 2,
    "visualize": 2, "training": 2,
    "models": 1, "probe": 1, "llm": 1, "storage": 1, "concepts": 1,
    "errors": 0, "cache": 0, "records": 0, "accounting": 0, "layering": 0, "__init__": 0,
}
RANK_NAMES = {5: "face", 4: "drivers", 3: "actors", 2: "stages", 1: "foundations", 0: "ground"}
CORE_RANK = 2          # stages and below: never import actors or ray
TEST_DOUBLES = "testing"
MAY_IMPORT_TEST_DOUBLES = {"bench"}


@dataclass(frozen=True)
class Import:
    """One import statement of one module: where it is and what it names."""

    path: Path
    line: int
    importer: str          # dotted module name
    imported: str          # dotted module name (absolute)

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def package_of(module: str) -> str | None:
    """The package of ``coin_scale.x.y`` (``x``); a module at the root is its own package."""
    parts = module.split(".")
    if parts[0] != ROOT_PACKAGE:
        return None
    if len(parts) == 1:
        return "__init__"
    return parts[1]


def module_name(path: Path, src_root: Path) -> str:
    rel = path.relative_to(src_root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(importer: str, is_package: bool, level: int, target: str | None) -> str:
    base = importer.split(".")
    if not is_package:
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, target] if target else base)


def imports_of(path: Path, src_root: Path) -> Iterator[Import]:
    """Every import of one file, top-level or inside a function, as absolute module names."""
    tree = ast.parse(path.read_text(), filename=str(path))
    importer = module_name(path, src_root)
    is_package = path.name == "__init__.py"
    shown = path.relative_to(src_root)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(shown, node.lineno, importer, alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = (_resolve(importer, is_package, node.level, node.module)
                    if node.level else (node.module or ""))
            for alias in node.names:
                # ``from coin_scale import sweep`` imports the package sweep, not the root.
                candidate = f"{base}.{alias.name}"
                sub = src_root.joinpath(*candidate.split("."))
                if sub.is_dir() or sub.with_suffix(".py").is_file():
                    yield Import(shown, node.lineno, importer, candidate)
                else:
                    yield Import(shown, node.lineno, importer, base)


@dataclass
class Report:
    """The package graph and every break of the rules."""

    edges: dict[tuple[str, str], list[Import]] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    cycles: list[list[str]] = field(default_factory=list)
    order: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations and not self.cycles


def _strongly_connected(nodes: Iterable[str], succ: dict[str, set[str]]) -> list[list[str]]:
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
        for w in sorted(succ.get(v, ())):
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
            out.append(sorted(comp))

    for n in sorted(nodes):
        if n not in index:
            visit(n)
    return out


def analyse(src_root: Path) -> Report:
    """Walk every module under ``src_root/coin_scale`` and check the rules."""
    report = Report()
    pkg_dir = src_root / ROOT_PACKAGE
    packages: set[str] = set()
    for path in sorted(pkg_dir.rglob("*.py")):
        importer_pkg = package_of(module_name(path, src_root))
        assert importer_pkg is not None
        packages.add(importer_pkg)
        for imp in imports_of(path, src_root):
            top = imp.imported.split(".")[0]
            rank = RANKS.get(importer_pkg)
            if top == "ray" and rank is not None and rank <= CORE_RANK:
                report.violations.append(
                    f"{imp.where}: {imp.importer} imports ray (the core never imports ray)")
            target_pkg = package_of(imp.imported)
            if target_pkg is None or target_pkg == importer_pkg:
                continue
            report.edges.setdefault((importer_pkg, target_pkg), []).append(imp)
    for pkg in sorted(packages):
        if pkg not in RANKS:
            report.violations.append(
                f"{ROOT_PACKAGE}/{pkg}: package {pkg!r} has no rank in coin_scale/layering.py RANKS")
    for (src, dst), imps in sorted(report.edges.items()):
        first = imps[0]
        rs, rd = RANKS.get(src), RANKS.get(dst)
        if rs is None or rd is None:
            continue
        if dst == TEST_DOUBLES and src not in MAY_IMPORT_TEST_DOUBLES:
            report.violations.append(
                f"{first.where}: {first.importer} imports the test doubles {first.imported}")
        elif dst == "actors" and rs <= CORE_RANK:
            report.violations.append(
                f"{first.where}: {first.importer} imports {first.imported} "
                "(the core never imports actors)")
        elif rd > rs:
            report.violations.append(
                f"{first.where}: {first.importer} ({RANK_NAMES[rs]}) imports "
                f"{first.imported} ({RANK_NAMES[rd]}): imports run from higher ranks to lower")
    succ: dict[str, set[str]] = {}
    for src, dst in report.edges:
        succ.setdefault(src, set()).add(dst)
    comps = _strongly_connected(packages, succ)
    report.cycles = [c for c in comps if len(c) > 1]
    report.order = _import_order(packages, succ, comps)
    return report


def _import_order(
    packages: set[str], succ: dict[str, set[str]], comps: list[list[str]]
) -> list[str]:
    """Packages dependencies-first, the lowest rank first among those ready (Kahn's algorithm);
    packages caught in a cycle come last, in Tarjan's order."""
    cyclic = {p for comp in comps if len(comp) > 1 for p in comp}
    pending = {p: {d for d in succ.get(p, ()) if d in packages and d != p} for p in packages}
    order: list[str] = []
    while True:
        ready = [p for p, deps in pending.items() if p not in cyclic and not deps]
        if not ready:
            break
        nxt = min(ready, key=lambda p: (RANKS.get(p, 99), p))
        order.append(nxt)
        del pending[nxt]
        for deps in pending.values():
            deps.discard(nxt)
    return order + [p for comp in comps for p in comp if p not in order]


def cycle_lines(report: Report) -> list[str]:
    """For each cycle, the imports that hold it together, with file and line."""
    lines = []
    for comp in report.cycles:
        lines.append(f"cycle between {len(comp)} packages: {', '.join(comp)}")
        members = set(comp)
        for (src, dst), imps in sorted(report.edges.items()):
            if src in members and dst in members:
                for imp in dict.fromkeys(imps):
                    lines.append(f"  {imp.where}: {imp.importer} -> {imp.imported}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m coin_scale.layering",
        description="Print coin_scale's packages in import order and every break of the "
                    "import rules (ranks, cycles, ray and actors in the core, test doubles).")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1],
                        help="the directory that holds coin_scale/ (default: this checkout)")
    args = parser.parse_args(argv)
    report = analyse(args.root)
    print("packages in import order (each imports only those above it):")
    for pkg in report.order:
        rank = RANKS.get(pkg)
        print(f"  {pkg:<12} {RANK_NAMES.get(rank, '?') if rank is not None else '?'}")
    for line in cycle_lines(report):
        print(line)
    for v in report.violations:
        print(v)
    n = len(report.violations) + len(report.cycles)
    print("import rules hold" if report.ok else f"{n} breaks of the import rules")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
