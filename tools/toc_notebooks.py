"""Print the notebooks listed in _toc.yml, one path per line (used by the Makefile)."""
import sys
from pathlib import Path

import yaml


def entries(node):
    if isinstance(node, dict):
        if "file" in node:
            yield node["file"]
        if "root" in node:
            yield node["root"]
        for value in node.values():
            if isinstance(value, (list, dict)):
                yield from entries(value)
    elif isinstance(node, list):
        for item in node:
            yield from entries(item)


def toc_entries(top: Path) -> list[str]:
    """Every page that ``top/_toc.yml`` lists (the root first), once each, as paths without extension."""
    return list(dict.fromkeys(entries(yaml.safe_load((top / "_toc.yml").read_text()))))


def main() -> int:
    top = Path(__file__).resolve().parents[1]
    for name in toc_entries(top):
        path = top / f"{name}.ipynb"
        if path.exists():
            print(path.relative_to(top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
