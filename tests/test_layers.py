"""The layering rule of DESIGN.md §4, checked on the source: imports only go upwards."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "kithara_fs"
# Top to bottom; a module may import only modules listed before it.
ORDER = [
    "redact", "errors", "config", "ranges", "headers", "bitrate", "playlists", "hls", "budget",
    "tasks", "net", "cache",
    "sources", "scheduler", "stream", "registry", "procfd", "fs", "notify", "statusview", "cli",
]  # fmt: skip
ONLY_IN = {"pyfuse3": {"fs", "cli"}, "httpx": {"net"}}


def layer_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def imports(path: Path) -> set[str]:
    """Absolute top-level names and kithara_fs layers imported by a module."""
    found: set[str] = set()
    package_parts = path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package_parts[: len(package_parts) - node.level + 1])
                target = [*base, *(node.module or "").split(".")] if node.module else base
                if len(target) > 1:
                    found.add(f"kithara_fs.{target[1]}")
                else:
                    found.update(f"kithara_fs.{alias.name}" for alias in node.names)
            elif node.module:
                parts = node.module.split(".")
                found.add(f"kithara_fs.{parts[1]}" if parts[0] == "kithara_fs" and len(parts) > 1
                          else parts[0])  # fmt: skip
    return found


def test_imports_follow_the_layers() -> None:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        layer = layer_of(path)
        if layer not in ORDER:
            continue  # __init__, __main__, demo: outside the stack
        allowed = set(ORDER[: ORDER.index(layer) + 1])
        for name in imports(path):
            if name.startswith("kithara_fs."):
                target = name.removeprefix("kithara_fs.").removesuffix(".py")
                if target in ORDER and target not in allowed:
                    problems.append(f"{path.relative_to(PACKAGE)} imports {target}")
            for lib, owners in ONLY_IN.items():
                if name == lib and layer not in owners:
                    problems.append(f"{path.relative_to(PACKAGE)} imports {lib}")
    assert problems == []


def test_every_module_has_a_docstring() -> None:
    missing = [
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if ast.get_docstring(ast.parse(p.read_text())) is None
    ]
    assert missing == []
