"""The package code the book shows exists and is public, documented API: every literalinclude (file and
:pyobject:) and every inspect.getsource(...) in the chapters points at something that is there, whose name has no
private part and which has a docstring.

Without this only `make book -W` notices a renamed or deleted function, minutes into a build.
"""
from __future__ import annotations

import ast
import importlib
import json
import re
from pathlib import Path

import pytest

BOOK = Path(__file__).resolve().parents[2] / "book"
DIRECTIVE = re.compile(r"^(?:```+|:::+)\{literalinclude\}\s+(?P<path>\S+)\s*\n(?P<options>(?:\s*:[\w-]+:.*\n)*)", re.M)


def chapters() -> list[Path]:
    return sorted(BOOK.glob("*.ipynb")) + sorted(BOOK.glob("*.md"))


def cells(path: Path) -> list[tuple[str, str]]:
    """(cell type, source) of a notebook, or one markdown 'cell' for a .md page."""
    if path.suffix == ".md":
        return [("markdown", path.read_text())]
    return [(cell["cell_type"], "".join(cell["source"])) for cell in json.loads(path.read_text())["cells"]]


def literalincludes(path: Path) -> list[tuple[str, str | None]]:
    found = []
    for kind, source in cells(path):
        if kind != "markdown":
            continue
        for match in DIRECTIVE.finditer(source + "\n"):
            option = re.search(r":pyobject:\s*(\S+)", match.group("options"))
            found.append((match.group("path"), option.group(1) if option else None))
    return found


def defined_names(module: Path) -> dict[str, bool]:
    """Dotted names of the classes and functions a module defines (``Class``, ``Class.method``, ``function``),
    as literalinclude's :pyobject: finds them, each with whether it has a docstring."""
    names = {}

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names[prefix + child.name] = ast.get_docstring(child) is not None
                if isinstance(child, ast.ClassDef):
                    visit(child, f"{prefix}{child.name}.")

    visit(ast.parse(module.read_text()), "")
    return names


def private(dotted: str) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in dotted.split("."))


INCLUDES = [(path.name, target, obj) for path in chapters() for target, obj in literalincludes(path)]


def test_the_book_shows_package_code():
    assert len(INCLUDES) >= 5  # the directive pattern still finds the book's includes


@pytest.mark.parametrize("chapter, target, obj", INCLUDES)
def test_literalinclude_target_exists(chapter, target, obj):
    module = (BOOK / target).resolve()
    assert module.is_file(), f"{chapter}: literalinclude of a missing file {target}"
    if obj is not None:
        names = defined_names(module)
        assert obj in names, f"{chapter}: {target} defines no {obj} (renamed or removed?)"
        assert not private(obj), f"{chapter} shows the private {obj}: show public, documented code"
        assert names[obj], f"{chapter} shows {obj}, which has no docstring"


def getsource_calls(path: Path) -> list[str]:
    """The dotted expressions a notebook passes to inspect.getsource, resolved through its own imports."""
    imports, calls = {}, []
    for kind, source in cells(path):
        if kind != "code":
            continue
        try:
            tree = ast.parse("\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    imports[alias.asname or alias.name] = f"{node.module}.{alias.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    imports[alias.asname or alias.name] = alias.name
            elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "getsource"
                  and node.args):
                calls.append(ast.unparse(node.args[0]))
    resolved = []
    for call in calls:
        head, _, rest = call.partition(".")
        resolved.append(imports.get(head, head) + (f".{rest}" if rest else ""))
    return resolved


GETSOURCE = [(path.name, name) for path in chapters() if path.suffix == ".ipynb" for name in getsource_calls(path)]


@pytest.mark.parametrize("chapter, name", GETSOURCE)
def test_getsource_target_exists(chapter, name):
    parts = name.split(".")
    for split in range(len(parts), 0, -1):  # the longest importable module, then attributes
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:]:
            assert hasattr(obj, attribute), f"{chapter}: inspect.getsource({name}): no {attribute}"
            obj = getattr(obj, attribute)
        assert not private(name), f"{chapter} shows the private {name}: show public, documented code"
        assert obj.__doc__, f"{chapter} shows {name}, which has no docstring"
        return
    pytest.fail(f"{chapter}: inspect.getsource({name}): cannot import {parts[0]}")


@pytest.mark.parametrize("chapter", [path for path in chapters() if path.suffix == ".ipynb"], ids=lambda p: p.name)
def test_code_cells_fit_the_page(chapter):
    # 88 columns (black -l 88) fit the book's text column with book/_css/segnotes.css; longer lines wrap there.
    long = [f"cell {i}: {line[:60]}..." for i, (kind, source) in enumerate(cells(chapter)) if kind == "code"
            for line in source.splitlines() if len(line) > 88]
    assert long == []

