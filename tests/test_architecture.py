"""The package's shape: rooms by stage of the flow, imports only down the flow, one
OR-Tools module, files small enough to read, one home for plan loading and rules."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "autoplan"

# Stage of the flow of every room (a sub-package or a top-level module). A module may
# import from its own room or from a room of a lower stage; rooms of one stage are
# siblings and import nothing from each other.
STAGE = {
    "errors": 0,
    "files": 1,
    "inputs": 1,  # files and inputs are siblings
    "graphs": 2, "plan_schema": 2,
    "catalog": 3,
    "cost": 4,
    "rules": 5,
    "search": 6,
    "explain": 7, "calibrate": 7,
    "render": 8, "export": 8,
    "sweep": 9,
    "cli": 10, "__init__": 10,
    "__main__": 11,
}


def _room(module: str) -> str:
    parts = module.split(".")
    assert parts[0] == "autoplan", module
    return "__init__" if len(parts) == 1 else parts[1]


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        rel = p.relative_to(PKG).with_suffix("")
        parts = ["autoplan", *rel.parts]
        if parts[-1] == "__init__" and len(parts) > 2:
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _imports(path: Path, module: str) -> list[tuple[str, int]]:
    """autoplan modules imported anywhere in the file (function-level imports too)."""
    tree = ast.parse(path.read_text())
    pkg = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.startswith("autoplan")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                                + ([base] if base else []))
            if base == "autoplan":  # from autoplan import x: x may be a room
                out += [(f"autoplan.{a.name}", node.lineno) for a in node.names]
            elif base.startswith("autoplan."):
                out.append((base, node.lineno))
    return out


def test_every_room_has_a_stage():
    rooms = {_room(m) for m in _modules()}
    assert rooms <= set(STAGE), sorted(rooms - set(STAGE))


def test_imports_point_down_the_flow():
    bad = []
    for module, path in _modules().items():
        src = _room(module)
        for target, line in _imports(path, module):
            dst = _room(target)
            if dst not in STAGE:  # `from autoplan import plan`: a name, not a room
                dst = "__init__"
            if dst == src:
                continue
            if STAGE[dst] >= STAGE[src]:
                bad.append(f"{path.relative_to(PKG.parent)}:{line} {src} -> {dst}")
    assert not bad, "imports against the flow:\n" + "\n".join(bad)


def test_ortools_is_imported_by_one_module():
    users = [p.relative_to(PKG.parent).as_posix() for p in _modules().values()
             if any(isinstance(n, (ast.Import, ast.ImportFrom))
                    and any((getattr(n, "module", None) or a.name).startswith("ortools")
                            for a in n.names)
                    for n in ast.walk(ast.parse(p.read_text())))]
    assert users == ["autoplan/search/solver.py"], users


def test_no_file_is_over_500_lines():
    long = {p.relative_to(PKG.parent).as_posix(): n for p in _modules().values()
            if (n := len(p.read_text().splitlines())) > 500}
    assert not long, long


def test_rooms_are_sub_packages():
    subs = {p.parent.name for p in PKG.glob("*/__init__.py")}
    assert {"inputs", "graphs", "cost", "rules", "search", "explain", "render", "export",
            "calibrate", "sweep"} <= subs
