"""The layout rules of DESIGN.md §4 and the README's map, checked on the source.

- imports only go downwards through the layers;
- outside ``sources/``, nothing imports a kind: only ``sources``, ``sources.base`` and
  ``sources.kinds``, and no name or string outside it says which kinds exist;
- nothing outside ``sources/`` and ``cache/`` touches a cache entry, and the modules that
  import pyfuse3 do not import the cache at all;
- no module is over 400 lines, no two modules share a file name, every module says what it
  owns in a docstring.
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

from kithara_fs.sources import kinds

PACKAGE = Path(__file__).resolve().parent.parent / "kithara_fs"
# Top to bottom; a module may import only modules listed before it (and its own layer).
ORDER = [
    "redact", "errors", "units", "ranges", "headers", "bitrate", "budget", "tasks", "notify", "net",
    "cache", "sources", "netconfig", "config", "engine", "tree", "procfd", "fuse", "statusview",
    "daemon", "mount", "cli",
]  # fmt: skip
ONLY_IN = {"pyfuse3": {"fuse"}, "httpx": {"net"}}
# What the rest of kithara_fs may import of sources/: the interfaces and the kinds table.
SOURCES_INTERFACE = {"kithara_fs.sources", "kithara_fs.sources.base", "kithara_fs.sources.kinds"}
MAX_LINES = 400


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def layer_of(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def dotted(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (PACKAGE.parent / rel).with_suffix(".py").exists() or (PACKAGE.parent / rel).is_dir()


def imports(path: Path) -> set[str]:
    """Every module a file imports: top-level library names, and full kithara_fs modules
    (``from ..sources import kinds`` is the module ``kithara_fs.sources.kinds``)."""
    found: set[str] = set()
    package = dotted(path) if path.name == "__init__.py" else dotted(path).rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(alias.name if alias.name.startswith("kithara_fs")
                          else alias.name.split(".")[0])  # fmt: skip
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            if not module.startswith("kithara_fs"):
                found.add(module.split(".")[0])
                continue
            found.add(module)
            for alias in node.names:
                if _is_module(f"{module}.{alias.name}"):
                    found.add(f"{module}.{alias.name}")
    return found


def _layer_of_module(name: str) -> str:
    return name.split(".")[1] if "." in name else ""


def test_imports_follow_the_layers() -> None:
    problems = []
    for path in modules():
        layer = layer_of(path)
        if layer not in ORDER:
            continue  # __init__, __main__, demo: outside the stack
        allowed = set(ORDER[: ORDER.index(layer) + 1])
        for name in imports(path):
            target = _layer_of_module(name) if name.startswith("kithara_fs.") else ""
            if target in ORDER and target not in allowed:
                problems.append(f"{path.relative_to(PACKAGE)} imports {target}")
            for lib, owners in ONLY_IN.items():
                if name == lib and layer not in owners:
                    problems.append(f"{path.relative_to(PACKAGE)} imports {lib}")
    assert problems == []


def test_no_module_outside_sources_imports_a_kind() -> None:
    problems = []
    for path in modules():
        if layer_of(path) in ("sources", "demo"):
            continue
        for name in imports(path):
            if name.startswith("kithara_fs.sources") and name not in SOURCES_INTERFACE:
                problems.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert problems == []


def test_no_module_outside_sources_names_a_kind() -> None:
    """No string equal to a kind's name, and no identifier made of one, outside sources/."""
    names = {kind for kind in kinds.names() if kind != kinds.DEFAULT}  # "file" is a word
    problems = []
    for path in modules():
        if layer_of(path) in ("sources", "demo"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            words: list[str] = []
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                words = [node.value.lower()]
            elif isinstance(node, ast.Name):
                words = node.id.lower().split("_")
            elif isinstance(node, ast.Attribute):
                words = node.attr.lower().split("_")
            hits = names.intersection(words)
            if hits:
                problems.append(f"{path.relative_to(PACKAGE)}:{node.lineno} names {hits}")
    assert problems == []


def test_only_sources_and_the_cache_touch_cache_entries() -> None:
    problems = []
    for path in modules():
        layer = layer_of(path)
        if layer in ("sources", "cache", "demo"):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "entry":
                problems.append(f"{path.relative_to(PACKAGE)}:{node.lineno} uses .entry")
            if isinstance(node, ast.Name) and node.id == "CacheEntry":
                problems.append(f"{path.relative_to(PACKAGE)}:{node.lineno} names CacheEntry")
        if "pyfuse3" in imports(path):
            touched = {n for n in imports(path) if n.startswith("kithara_fs.cache")}
            if touched:
                problems.append(f"{path.relative_to(PACKAGE)} imports pyfuse3 and {touched}")
    assert problems == []


def test_no_module_is_over_400_lines() -> None:
    long = {
        str(p.relative_to(PACKAGE)): lines
        for p in modules()
        if (lines := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_no_two_modules_share_a_file_name() -> None:
    names = Counter(p.name for p in modules() if p.name not in ("__init__.py", "__main__.py"))
    assert {name: count for name, count in names.items() if count > 1} == {}


def test_every_module_has_a_docstring() -> None:
    missing = [
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if ast.get_docstring(ast.parse(p.read_text())) is None
    ]
    assert missing == []


def test_the_rules_can_fail() -> None:
    """The checks above see what they look for (a check that cannot fail is a defect)."""
    fs = PACKAGE / "fuse" / "operations.py"
    assert "pyfuse3" in imports(fs) and "kithara_fs.tree" in imports(fs)
    assert "kithara_fs.sources.kinds" in imports(PACKAGE / "tree" / "tree.py")
    assert "kithara_fs.sources.hls" in imports(PACKAGE / "sources" / "kinds.py")
    entries = [n for n in ast.walk(ast.parse((PACKAGE / "sources" / "bytesource.py").read_text()))
               if isinstance(n, ast.Attribute) and n.attr == "entry"]  # fmt: skip
    assert entries, "sources use their entry: the .entry check would see a use elsewhere"
