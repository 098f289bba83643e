"""Fixtures for lab.models tests: an isolated LAB_CACHE and a loopback fake of the Hugging Face Hub."""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import threading
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

FAKE_COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch) -> Path:
    """A private LAB_CACHE: for tests that count conversions or damage the cache on purpose."""
    root = tmp_path / "lab-cache"
    monkeypatch.setenv("LAB_CACHE", str(root))
    return root


class FakeHub:
    """Serves one folder as Hub repo ``repo`` on 127.0.0.1 (the three endpoints snapshot_download uses:
    revision info, recursive tree listing, and HEAD/GET ``/<repo>/resolve/<commit>/<file>``)."""

    def __init__(self, folder: Path, repo: str):
        self.repo = repo
        self.commit = FAKE_COMMIT
        self.files = {p.relative_to(folder).as_posix(): p.read_bytes()
                      for p in sorted(folder.rglob("*")) if p.is_file()}
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code, body=b"", headers=None):
                self.send_response(code)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_GET(self):
                path = unquote(urlparse(self.path).path)
                hub.requests.append((self.command, path))
                json_headers = {"Content-Type": "application/json"}
                if path.startswith(f"/api/models/{hub.repo}/revision/"):
                    info = {"id": hub.repo, "sha": FAKE_COMMIT, "siblings": [{"rfilename": f} for f in hub.files]}
                    return self._send(200, json.dumps(info).encode(), json_headers)
                if path.startswith(f"/api/models/{hub.repo}/tree/"):
                    tree = [{"type": "file", "path": f, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                            for f, b in hub.files.items()]
                    return self._send(200, json.dumps(tree).encode(), json_headers)
                prefix = f"/{hub.repo}/resolve/"
                if path.startswith(prefix):
                    rel = path[len(prefix):].split("/", 1)[1]
                    if rel in hub.files:
                        body = hub.files[rel]
                        return self._send(200, body, {"X-Repo-Commit": FAKE_COMMIT,
                                                      "ETag": f'"{hashlib.sha1(body).hexdigest()}"'})
                    return self._send(404, b"", {"X-Error-Code": "EntryNotFound"})
                return self._send(404, b"", {"X-Error-Code": "RepoNotFound"})

            do_HEAD = do_GET

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def downloaded(self) -> set[str]:
        prefix = f"/{self.repo}/resolve/{FAKE_COMMIT}/"
        return {p[len(prefix):] for method, p in self.requests if method == "GET" and p.startswith(prefix)}

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_hub(tmp_path, monkeypatch, isolated_cache):
    """``org/tiny-bert`` on a loopback Hub: a random bert-tiny folder plus a decoy pytorch_model.bin."""
    from lab.models import resolve

    repo_dir = tmp_path / "repo"
    shutil.copytree(resolve("random:bert-tiny"), repo_dir)
    (repo_dir / "lab_model.json").unlink()                       # a real Hub repo has no lab marker
    (repo_dir / "pytorch_model.bin").write_bytes(b"\x80decoy pickle that must never be fetched")
    (repo_dir / "README.md").write_text("# tiny\n")
    hub = FakeHub(repo_dir, "org/tiny-bert")
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-home" / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    import huggingface_hub.constants

    # huggingface_hub reads HF_HUB_OFFLINE once at import: a CI that exports it must not block
    # this loopback "Hub" (lab's registry re-reads the variable per call).
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    yield hub
    hub.close()
