"""segnotes.hub: verified downloads into a cache, against a local HTTP server on 127.0.0.1."""
import contextlib
import hashlib
import http.server
import socket
import threading
from pathlib import Path

import pytest

from segnotes import hub
from segnotes.experiments import checkpoint_root, load_run
from segnotes.experiments.runner import RunFiles, download_root

PAYLOAD = bytes(range(256)) * 64  # 16 KiB
NAME = "checkpoints/demo/file.pt"


class _Handler(http.server.SimpleHTTPRequestHandler):
    mode = "ok"  # "ok", "corrupt" or "truncate"

    def log_message(self, *args):  # keep pytest's output clean
        pass

    def do_GET(self):
        if self.mode == "ok":
            return super().do_GET()
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            return self.send_error(404)
        body = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.mode == "corrupt":
            self.wfile.write(bytes(len(body)))
        else:  # the connection drops half-way: fewer bytes than Content-Length announced
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def serve(folder: Path, mode: str = "ok"):
    handler = type("Handler", (_Handler,), {"mode": mode})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a, **k: handler(*a, directory=str(folder), **k)
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A served data/ folder holding NAME, a manifest listing it, an empty cache, and no checkout."""
    data = tmp_path / "mirror"
    (data / NAME).parent.mkdir(parents=True)
    (data / NAME).write_bytes(PAYLOAD)
    manifest = tmp_path / "downloads.sha256"
    monkeypatch.setattr(hub, "MANIFEST", manifest)
    assert hub.write_manifest(data, folders=("checkpoints",), path=manifest) == 1
    monkeypatch.setattr(hub, "checkout_data", lambda: None)
    monkeypatch.setenv("SEGNOTES_CACHE", str(tmp_path / "cache"))
    yield data
    hub._read_manifest.cache_clear()


def test_manifest_lists_finished_checkpoints_only(tmp_path):
    # a README beside the checkpoints, a run still training and a hidden file are not downloads
    data = tmp_path / "data"
    (data / "checkpoints" / "ch").mkdir(parents=True)
    for name in ("README.md", "ch/run.pt", "ch/other.partial.pt", "ch/.lock.pt"):
        (data / "checkpoints" / name).write_bytes(b"x")
    manifest = tmp_path / "downloads.sha256"
    try:
        assert hub.write_manifest(data, path=manifest) == 1
        assert manifest.read_text().splitlines()[1].endswith(" 1 checkpoints/ch/run.pt")
    finally:
        hub._read_manifest.cache_clear()


def test_manifest_lists_name_sha_and_size(mirror):
    assert hub.manifest() == {NAME: (hashlib.sha256(PAYLOAD).hexdigest(), len(PAYLOAD))}
    assert hub.download_size("checkpoints/") == len(PAYLOAD)


def test_fetch_downloads_verifies_and_reuses_the_cache_offline(mirror, monkeypatch):
    with serve(mirror) as url:
        monkeypatch.setenv("SEGNOTES_DOWNLOAD_URL", url)
        path = hub.fetch(NAME)
    assert path == hub.cache_dir() / NAME and path.read_bytes() == PAYLOAD
    monkeypatch.setenv("SEGNOTES_DOWNLOAD_URL", closed_port_url())  # offline now
    assert hub.fetch(NAME) == path
    assert [p.name for p in path.parent.iterdir()] == ["file.pt"]  # no temporary file left


def test_offline_with_empty_cache_names_file_url_and_variable(mirror, monkeypatch):
    url = closed_port_url()
    monkeypatch.setenv("SEGNOTES_DOWNLOAD_URL", url)
    with pytest.raises(hub.DownloadError) as error:
        hub.fetch(NAME)
    message = str(error.value)
    assert NAME in message and url + NAME in message and "$SEGNOTES_DOWNLOAD_URL" in message
    assert not (hub.cache_dir() / NAME).exists()


def test_corrupt_cached_file_is_detected_removed_and_fetched_again(mirror, monkeypatch):
    cached = hub.cache_dir() / NAME
    cached.parent.mkdir(parents=True)
    cached.write_bytes(PAYLOAD[:-1] + b"\x00")  # one byte flipped
    with serve(mirror) as url:
        monkeypatch.setenv("SEGNOTES_DOWNLOAD_URL", url)
        with pytest.warns(UserWarning, match="does not match its sha256"):
            path = hub.fetch(NAME)
    assert path.read_bytes() == PAYLOAD


@pytest.mark.parametrize("mode", ["truncate", "corrupt"])
def test_interrupted_or_corrupt_download_leaves_nothing_that_is_read_later(mirror, monkeypatch, mode):
    with serve(mirror, mode) as url:
        monkeypatch.setenv("SEGNOTES_DOWNLOAD_URL", url)
        with pytest.raises(hub.DownloadError, match="interrupted" if mode == "truncate" else "corrupt"):
            hub.fetch(NAME)
    folder = (hub.cache_dir() / NAME).parent
    assert list(folder.iterdir()) == []  # neither the target nor a half-written temporary file
    with serve(mirror) as url:  # the next try starts afresh and succeeds
        monkeypatch.setenv("SEGNOTES_DOWNLOAD_URL", url)
        assert hub.fetch(NAME).read_bytes() == PAYLOAD


def test_a_killed_downloads_temporary_file_is_never_read(mirror, monkeypatch):
    folder = (hub.cache_dir() / NAME).parent
    folder.mkdir(parents=True)
    (folder / ".file.pt.abc123.part").write_bytes(PAYLOAD[:100])  # what a kill mid-download leaves
    monkeypatch.setenv("SEGNOTES_DOWNLOAD_URL", closed_port_url())
    with pytest.raises(hub.DownloadError):
        hub.fetch(NAME)


def test_unknown_name_is_refused(mirror):
    with pytest.raises(ValueError, match="name must be a file listed in .*got 'checkpoints/demo/nope.pt'"):
        hub.fetch("checkpoints/demo/nope.pt")


def test_base_url_defaults_to_this_versions_tag(monkeypatch):
    import segnotes

    monkeypatch.delenv("SEGNOTES_DOWNLOAD_URL", raising=False)
    assert hub.base_url() == hub.DEFAULT_URL.format(version=segnotes.__version__)
    monkeypatch.setenv("SEGNOTES_DOWNLOAD_URL", "http://127.0.0.1:9/data")
    assert hub.base_url() == "http://127.0.0.1:9/data/"


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("SEGNOTES_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert hub.cache_dir() == tmp_path / "segnotes"
    monkeypatch.setenv("SEGNOTES_CACHE", str(tmp_path / "mine"))
    assert hub.cache_dir() == tmp_path / "mine"


# ----------------------------------------------------------------------------------------------
# The shipped manifest and the checkpoints


def test_shipped_manifest_matches_the_checkouts_data():
    data = hub.checkout_data()
    if data is None:
        pytest.skip("not a source checkout")
    entries = hub.manifest()
    files = {p.relative_to(data).as_posix() for p in (data / "checkpoints").rglob("*.pt")
             if not p.name.endswith(".partial.pt")}
    assert set(entries) == files, "run `make manifest` after `make checkpoints`"
    for name, (sha256, size) in entries.items():
        assert (data / name).stat().st_size == size, name
        assert hub.sha256_file(data / name) == sha256, name


def test_inside_a_checkout_nothing_is_downloaded(monkeypatch):
    data = hub.checkout_data()
    if data is None:
        pytest.skip("not a source checkout")
    monkeypatch.setenv("SEGNOTES_DOWNLOAD_URL", closed_port_url())
    name = "checkpoints/fcn/fcn16s_fixedup_s0.pt"
    assert hub.fetch(name) == data / name
    assert checkpoint_root() == data / "checkpoints"


def test_outside_a_checkout_load_run_fetches_a_books_checkpoint(monkeypatch, tmp_path):
    data = hub.checkout_data()
    if data is None:
        pytest.skip("needs the checkout's data/ to serve")
    monkeypatch.setattr(hub, "checkout_data", lambda: None)
    monkeypatch.setenv("SEGNOTES_CACHE", str(tmp_path))
    monkeypatch.delenv("SEGNOTES_CHECKPOINTS", raising=False)
    root = checkpoint_root()
    assert root == download_root() == tmp_path / "checkpoints"
    with serve(data) as url:
        monkeypatch.setenv("SEGNOTES_DOWNLOAD_URL", url)
        state = load_run(root, "fcn16s_fixedup_s0")
    assert state["meta"]["spec"]["name"] == "fcn16s_fixedup_s0"
    assert (root / "fcn" / "fcn16s_fixedup_s0.pt").is_file()
    # a folder of the user's own is never filled from the hub: a missing run there is an error
    with pytest.raises(FileNotFoundError):
        RunFiles("fcn").load_run(tmp_path / "mine", "fcn16s_fixedup_s0")
