"""Write the book's configuration for `make site`: _config.yml with `execute_notebooks: off`.

`make site` builds the HTML from the notebooks' stored outputs (the ones `make nbval` proves the code still
gives), in seconds instead of re-executing every chapter; `make book` executes them. Everything else is the
same file, so the two builds give the same pages.

    python tools/site_config.py _config.yml _build/site_config.yml
"""
import sys
from pathlib import Path

import yaml


def site_config(config: dict) -> dict:
    execute = dict(config.get("execute") or {})
    execute["execute_notebooks"] = "off"
    return {**config, "execute": execute}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    source, target = Path(argv[0]), Path(argv[1])
    text = "# Written by tools/site_config.py from {}: do not edit.\n".format(source)
    text += yaml.safe_dump(site_config(yaml.safe_load(source.read_text())), sort_keys=False, allow_unicode=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    partial.write_text(text)
    partial.replace(target)  # atomic: jupyter-book never reads half a file
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
