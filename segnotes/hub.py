"""Files the chapters load that a wheel does not carry, fetched by name and checked by sha256.

Like d2l's ``DATA_HUB`` or torchvision's weights: a manifest shipped inside the package
(``segnotes/downloads.sha256``) names each file with its sha256 and size; :func:`fetch` returns a
local path to a verified copy::

    path = segnotes.hub.fetch("checkpoints/fcn/fcn8s_s0.pt")

Names mirror the repository's ``data/`` folder, and so does the layout under the base URL
(``<base>/checkpoints/fcn/fcn8s_s0.pt``): serving a clone's ``data/`` over HTTP is a valid mirror.

Where a file comes from, in order:

1. a source checkout's ``data/`` folder (nothing is downloaded inside a clone);
2. the cache, ``$SEGNOTES_CACHE`` or ``$XDG_CACHE_HOME/segnotes`` or ``~/.cache/segnotes``, when its
   checksum matches (a corrupt or truncated copy is reported, removed and fetched again);
3. ``$SEGNOTES_DOWNLOAD_URL`` if set, else :data:`DEFAULT_URL` (this version's tag of the repository).

A download is written to a temporary name in the cache folder, checked, and only then renamed
into place, so an interrupted or corrupt download is never read.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
import warnings
from functools import lru_cache
from pathlib import Path

__all__ = [
    "DEFAULT_URL",
    "DownloadError",
    "base_url",
    "cache_dir",
    "checkout_data",
    "download_size",
    "fetch",
    "manifest",
    "sha256_file",
    "write_manifest",
]

# The data/ folder of this version's release tag. $SEGNOTES_DOWNLOAD_URL overrides it (a mirror,
# or `python -m http.server --directory data` in a clone).
DEFAULT_URL = "https://raw.githubusercontent.com/segnotes/segnotes/v{version}/data/"

MANIFEST = Path(__file__).with_name("downloads.sha256")
_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A file could not be fetched, or what was fetched failed its checksum."""


def sha256_file(path: str | os.PathLike) -> str:
    """The hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


@lru_cache(maxsize=1)
def _read_manifest(path: Path) -> dict[str, tuple[str, int]]:
    entries = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 3 or len(parts[0]) != 64 or not parts[1].isdigit():
            raise ValueError(f"segnotes.hub: {path} line {number} must read 'SHA256 SIZE NAME', got {line!r}")
        entries[parts[2]] = (parts[0], int(parts[1]))
    return entries


def manifest() -> dict[str, tuple[str, int]]:
    """Every file :func:`fetch` knows: name (e.g. ``"checkpoints/fcn/fcn8s_s0.pt"``) -> (sha256, size in bytes)."""
    return dict(_read_manifest(MANIFEST))


def download_size(prefix: str = "") -> int:
    """Bytes of every manifest file whose name starts with ``prefix`` (e.g. ``"checkpoints/fcn/"``)."""
    return sum(size for name, (_, size) in _read_manifest(MANIFEST).items() if name.startswith(prefix))


def checkout_data() -> Path | None:
    """A source checkout's ``data/`` folder when the package runs from one (``pip install -e .``), else None."""
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file() and (checkout / "data").is_dir():
        return checkout / "data"
    return None


def cache_dir() -> Path:
    """Where downloads are kept: ``$SEGNOTES_CACHE``, else ``$XDG_CACHE_HOME/segnotes``, else ``~/.cache/segnotes``."""
    if os.environ.get("SEGNOTES_CACHE"):
        return Path(os.environ["SEGNOTES_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "segnotes"
    return Path.home() / ".cache" / "segnotes"


def base_url() -> str:
    """``$SEGNOTES_DOWNLOAD_URL`` if set, else :data:`DEFAULT_URL` for this version; always ends with ``/``."""
    from . import __version__

    url = os.environ.get("SEGNOTES_DOWNLOAD_URL") or DEFAULT_URL.format(version=__version__)
    return url if url.endswith("/") else url + "/"


def _known(fn: str, name: str) -> tuple[str, int]:
    entries = _read_manifest(MANIFEST)
    if not isinstance(name, str) or name not in entries:
        folders = sorted({n.rsplit("/", 1)[0] for n in entries})
        raise ValueError(
            f"{fn}: name must be a file listed in {MANIFEST.name} (folders {', '.join(folders)}), got {name!r}"
        )
    return entries[name]


def fetch(name: str, *, progress: bool = False, timeout: float = 60.0) -> Path:
    """A local, verified copy of the file ``name``, downloading it into the cache if needed.

    Args:
        name (str): the file's path under ``data/``, as listed by :func:`manifest`.
        progress (bool): show a tqdm bar while downloading.
        timeout (float): seconds to wait for the server before giving up.

    Returns:
        Path: the checkout's own file, or the cached copy (whose sha256 matches the manifest).

    Raises:
        ValueError: ``name`` is not in the manifest.
        DownloadError: the file cannot be fetched (offline, no server, HTTP error), or the
            downloaded bytes do not match the manifest. The message names the file, the URL and
            ``$SEGNOTES_DOWNLOAD_URL``.
    """
    sha256, size = _known("fetch", name)
    local = checkout_data()
    if local is not None and (local / name).is_file():
        return local / name
    target = cache_dir() / name
    if target.is_file():
        if target.stat().st_size == size and sha256_file(target) == sha256:
            return target
        warnings.warn(
            f"segnotes.hub: cached {target} does not match its sha256 (corrupt or truncated); removed, fetching again",
            stacklevel=2,
        )
        target.unlink()
    _download(name, target, sha256, size, progress=progress, timeout=timeout)
    return target


def _download(name: str, target: Path, sha256: str, size: int, *, progress: bool, timeout: float) -> None:
    url = base_url() + name
    target.parent.mkdir(parents=True, exist_ok=True)
    # A unique temporary name beside the target: concurrent fetches never share one, and the
    # rename below is atomic on one file system.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        digest, written = _stream(url, fd, name, progress=progress, timeout=timeout)
        if written != size or digest != sha256:
            raise DownloadError(
                f"segnotes.hub: {name} from {url} is corrupt: got {written} bytes with sha256 {digest}, "
                f"expected {size} bytes with sha256 {sha256}; nothing was kept. Try again, or set "
                "$SEGNOTES_DOWNLOAD_URL to another mirror"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _stream(url: str, fd: int, name: str, *, progress: bool, timeout: float) -> tuple[str, int]:
    """Copy ``url`` into the open file ``fd`` (closed on return); its sha256 and byte count."""
    digest = hashlib.sha256()
    written = 0
    with os.fdopen(fd, "wb") as out:
        try:
            response = urllib.request.urlopen(url, timeout=timeout)
        except (urllib.error.URLError, OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            raise DownloadError(
                f"segnotes.hub: cannot download {name} from {url} ({reason}). Offline? Copy the file to "
                f"{cache_dir() / name}, or set $SEGNOTES_DOWNLOAD_URL to a mirror of the repository's data/ "
                "folder (in a clone: python -m http.server --directory data)"
            ) from None
        announced = response.headers.get("Content-Length")
        with response, _bar(progress, announced, name) as bar:
            try:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
            except (http.client.HTTPException, OSError) as error:
                raise DownloadError(
                    f"segnotes.hub: the download of {name} from {url} was interrupted after {written} bytes "
                    f"({type(error).__name__}); nothing was kept. Try again"
                ) from None
        if announced is not None and written < int(announced):  # the server closed the connection early
            raise DownloadError(
                f"segnotes.hub: the download of {name} from {url} was interrupted after {written} of "
                f"{announced} bytes; nothing was kept. Try again"
            )
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest(), written


def _bar(progress: bool, total: str | None, name: str):
    from tqdm.auto import tqdm

    return tqdm(total=int(total) if total and total.isdigit() else None, unit="B", unit_scale=True, desc=name, disable=not progress)


def write_manifest(data: str | os.PathLike, folders: tuple[str, ...] = ("checkpoints",), path: Path = MANIFEST) -> int:
    """Write the manifest of every file under ``data/<folder>`` (sorted; finished ``*.pt`` only); return the count.

    ``make checkpoints`` calls it after training, and a test checks it against a clone's ``data/``.
    """
    data = Path(data)
    lines = ["# sha256 size name (under data/): the files segnotes.hub.fetch downloads; make manifest writes it"]
    count = 0
    for folder in folders:
        for file in sorted((data / folder).rglob("*")):
            # finished checkpoints only: not a run still training, nor the folder's README
            if file.is_file() and file.suffix == ".pt" and not file.name.endswith(".partial.pt") \
                    and not file.name.startswith("."):
                rel = file.relative_to(data).as_posix()
                lines.append(f"{sha256_file(file)} {file.stat().st_size} {rel}")
                count += 1
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)
    _read_manifest.cache_clear()
    return count
