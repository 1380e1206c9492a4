"""The package's layers (README.md, "Architecture"): each part imports only from the layers above it."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "segnotes"
BASE = {"_checks", "_args", "utils", "hub", "book", "__version__"}
ALLOWED = {
    "_checks": set(), "_args": set(), "utils": {"_checks"}, "hub": {"__version__"}, "book": BASE,
    "ops": BASE, "metrics": BASE,
    "data": BASE | {"metrics"}, "models": BASE | {"ops"},
    "engine": BASE | {"metrics"},
    "viz": BASE | {"ops", "metrics", "data", "models"}, "widgets": BASE | {"ops", "metrics", "data", "models", "viz"},
    "experiments": BASE | {"ops", "metrics", "data", "models", "engine", "viz"},
}


def imported_parts(path: Path, part: str) -> set:
    """The other top-level parts of segnotes that ``path`` (in ``part``) imports, relatively."""
    inside = path.relative_to(PACKAGE).with_suffix("").parts
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            here = list(inside[:-1])
            base = here[: len(here) - (node.level - 1)]
            target = base + (node.module.split(".") if node.module else [])
            names = [target[0]] if target else [alias.name for alias in node.names]
            found |= {name for name in names if name != part}
    return found


def test_each_part_imports_only_from_the_layers_above():
    checked = 0
    for path in sorted(PACKAGE.rglob("*.py")):
        part = path.relative_to(PACKAGE).with_suffix("").parts[0]
        if part in ("__init__", "__main__", "cli"):  # the top: the CLI and the package's own namespace
            continue
        imports = imported_parts(path, part)
        assert imports <= ALLOWED[part], f"{path.relative_to(PACKAGE)} imports {sorted(imports - ALLOWED[part])}"
        checked += 1
    assert checked > 40
