"""tests/book: the site checks live in sitecheck.py beside the tests that use them (pytest imports test files in
importlib mode, which puts no test folder on sys.path, so this folder, and tools/ for the TOC reader, are added
here, before they are imported)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))  # toc_notebooks, the TOC reader
