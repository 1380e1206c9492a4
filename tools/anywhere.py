"""`make anywhere`: every chapter run as a user outside the repository would run it.

1. Build the wheel and install it into a fresh venv with its declared dependencies only, at the
   newest versions the registry serves: no constraints.txt, no book or test extras. The only
   additions are what runs a notebook (nbclient, ipykernel), as Jupyter or Colab provide.
2. Serve the repository's data/ folder on 127.0.0.1 as the download mirror
   ($SEGNOTES_DOWNLOAD_URL), as the release host would serve it.
3. Execute each chapter copied alone into an empty folder, with an empty HOME (so no cache, no
   data set, no checkpoints), and report its time, what it downloaded and the versions resolved.
4. Run the widget tests against the wheel with ipywidgets 7.7.1 (what Colab ships) as well as the newest 8.

Usage: python tools/anywhere.py [--work DIR] [--keep] [--chapters data,fcn]
Exit status 1 when a chapter fails; its executed notebook is kept under DIR for inspection.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VERSIONS = ("torch", "torchvision", "numpy", "matplotlib", "ipywidgets", "pillow", "pycocotools", "ipython")
# Runs inside the fresh venv: execute one notebook in its folder, as Jupyter would.
EXECUTE = """
import sys, nbformat
from nbclient import NotebookClient
path = sys.argv[1]
nb = nbformat.read(path, as_version=4)
client = NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": sys.argv[2]}})
try:
    client.execute()
finally:
    nbformat.write(nb, path)
"""


def log(message: str) -> None:
    print(f"[anywhere] {message}", flush=True)


def run(cmd: list, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], check=True, **kwargs)


def chapters() -> list[Path]:
    out = subprocess.run([sys.executable, REPO / "tools" / "toc_notebooks.py"], check=True, capture_output=True,
                         text=True, cwd=REPO).stdout.split()
    return [REPO / p for p in out]


def build_venv(work: Path) -> Path:
    wheels = work / "wheel"
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", wheels, REPO])
    (wheel,) = wheels.glob("segnotes-*.whl")
    venv = work / "venv"
    run([sys.executable, "-m", "venv", venv])
    python = venv / "bin" / "python"
    # No -c constraints.txt: the newest versions the registry serves (pip's global config still applies).
    run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", wheel, "nbclient", "ipykernel"])
    return python


def versions(python: Path) -> dict:
    code = ("import importlib.metadata as m, json, sys; "
            f"print(json.dumps({{n: m.version(n) for n in {list(VERSIONS)!r}}}))")
    return json.loads(run([python, "-c", code], capture_output=True, text=True).stdout)


@contextlib.contextmanager
def serve(folder: Path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def run_chapter(python: Path, notebook: Path, work: Path, url: str) -> dict:
    folder = work / "chapters" / notebook.stem
    home = work / "homes" / notebook.stem
    folder.mkdir(parents=True)
    home.mkdir(parents=True)
    copy = folder / notebook.name
    shutil.copy(notebook, copy)
    env = {
        "PATH": f"{python.parent}:/usr/bin:/bin",
        "HOME": str(home),
        "SEGNOTES_DOWNLOAD_URL": url,
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        "LANG": "C.UTF-8",
    }
    start = time.perf_counter()
    result = subprocess.run([python, "-c", EXECUTE, copy, folder], env=env, cwd=folder, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    downloaded = folder_bytes(home / ".cache" / "segnotes" / "checkpoints")
    if result.returncode != 0:
        log(f"{notebook.name} FAILED after {seconds:.0f} s; executed copy kept in {copy}")
        print(result.stderr[-6000:], file=sys.stderr)
    return {"chapter": notebook.name, "seconds": round(seconds, 1), "ok": result.returncode == 0,
            "downloaded_mb": round(downloaded / 2**20, 1)}


def widget_tests(python: Path, ipywidgets: str) -> bool:
    run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", f"ipywidgets{ipywidgets}", "pytest"])
    version = versions(python)["ipywidgets"]
    # From an empty folder, so `segnotes` is the installed wheel, not the checkout.
    with tempfile.TemporaryDirectory() as empty:
        # Not the browser tests of the widgets' page versions: they need Chromium and playwright, which a
        # user's environment has no reason to hold (make browser runs them).
        result = subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", empty,
                                 "-m", "not browser", REPO / "tests" / "widgets"], cwd=empty)
    log(f"widget tests with ipywidgets {version}: {'passed' if result.returncode == 0 else 'FAILED'}")
    return result.returncode == 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    parser.add_argument("--chapters", default=None, help="comma-separated notebook stems (default: the TOC's)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="segnotes-anywhere-")) if args.work is None else args.work
    if args.work is not None:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
    notebooks = chapters()
    if args.chapters:
        wanted = args.chapters.split(",")
        unknown = sorted(set(wanted) - {nb.stem for nb in notebooks})
        if unknown:
            parser.error(f"--chapters: unknown chapter(s) {unknown}; the TOC has {[nb.stem for nb in notebooks]}")
        notebooks = [nb for nb in notebooks if nb.stem in wanted]
    start = time.perf_counter()
    python = build_venv(work)
    log(f"fresh venv in {time.perf_counter() - start:.0f} s: {versions(python)}")
    with serve(REPO / "data") as url:
        results = []
        for notebook in notebooks:
            results.append(run_chapter(python, notebook, work, url))
            log(json.dumps(results[-1]))
    ok = all(r["ok"] for r in results)
    ok &= widget_tests(python, ">=8")
    ok &= widget_tests(python, "==7.7.1")  # what Colab's runtime ships (googlecolab/backend-info's pip freeze)
    total = sum(r["seconds"] for r in results)
    log(f"{sum(r['ok'] for r in results)}/{len(results)} chapters ran in {total:.0f} s; "
        f"checkpoints downloaded: {sum(r['downloaded_mb'] for r in results):.1f} MB")
    if ok and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
