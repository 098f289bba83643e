"""lab.data.sources: registry vs mirror, and the download path against a loopback HTTP server."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import shutil
import socket
import threading
from pathlib import Path

import pytest

from lab.data import sources
from lab.data.sources import DataIntegrityError, DataUnavailableError, registry, resolve

RANK_LLM = "7573c0e570ce5eb7ddadb9ac087c84a936d7add2"


def test_registry_matches_mirror_sha256sums(mirror):
    sums = dict(reversed(line.split()) for line in (mirror / "SHA256SUMS").read_text().splitlines() if line.strip())
    reg = {name: e.sha256 for name, e in registry().items()}
    assert reg == sums
    for name, e in registry().items():                 # and the mirror really holds those bytes
        assert hashlib.sha256((mirror / name).read_bytes()).hexdigest() == e.sha256, name


def test_registry_urls_are_pinned():
    for name, e in registry().items():
        assert e.url.startswith("https://raw.githubusercontent.com/"), name
        if name.startswith("trec-dl/") and "castorini/rank_llm" in e.url:
            pinned = "1cd06c06" if (name.startswith("trec-dl/repllama") and name.endswith(".json")) else RANK_LLM
            assert f"/rank_llm/{pinned}/retrieve_results/" in e.url, name
        if "castorini/anserini" in e.url:
            assert "/anserini/anserini-0.14.3/src/main/resources/topics-and-qrels/" in e.url, name
        assert e.gunzip == e.url.endswith(".gz"), name
    assert registry()["trec-dl/repllama_top100_dl19.json"].url.endswith("/REP_LLAMA/retrieve_results_dl19.json")
    assert registry()["trec-dl/splade_pp_ed_top100_dl20.trec.txt"].url.endswith(
        "/SPLADE_P_P_ENSEMBLE_DISTIL/trec_results_dl20.txt")


def test_mirror_wins(mirror):
    assert resolve("trec-dl/qrels.dl19-passage.txt") == mirror / "trec-dl/qrels.dl19-passage.txt"
    with pytest.raises(KeyError, match="unknown data file"):
        resolve("trec-dl/nope.txt")


# ------------------------------------------------------------------------------- loopback downloads

class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def log_message(self, *args):   # keep pytest output clean
        pass

    def do_GET(self):
        self.requests.append(self.path)
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 (random port) serving ``served/`` laid out like the mirror."""
    root = tmp_path / "served"
    root.mkdir()
    handler = type("H", (_Handler,), {"requests": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    httpd.root, httpd.requests = root, handler.requests
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def online(monkeypatch, tmp_path, server):
    """No mirror, an empty private cache, downloads allowed from the loopback server."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("LAB_DATA_MIRROR", "")
    monkeypatch.setenv("LAB_CACHE", str(cache))
    monkeypatch.setenv("LAB_DATA_URL_BASE", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("LAB_DATA_TIMEOUT", "10")
    monkeypatch.delenv("LAB_OFFLINE", raising=False)
    return cache / "data"


def _serve(server, mirror: Path, name: str, data: bytes | None = None) -> bytes:
    dest = server.root / name
    dest.parent.mkdir(parents=True, exist_ok=True)
    data = (mirror / name).read_bytes() if data is None else data
    dest.write_bytes(data)
    return data


def _leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


NAME = "trec-dl/topics.dl19-passage.txt"


def test_download_verified_and_cached(mirror, online, server):
    data = _serve(server, mirror, NAME)
    path = resolve(NAME)
    assert path == online / NAME and path.read_bytes() == data
    assert server.requests == [f"/{NAME}"]
    assert _leftovers(online) == [NAME]                   # no temporary file left beside it
    assert resolve(NAME) == path                          # second call: verified cache, no request
    assert server.requests == [f"/{NAME}"]


def test_gzipped_source_is_gunzipped_then_verified(mirror, online, server):
    name = "queries/topics.beir-v1.0.0-scifact.test.tsv"
    plain = (mirror / name).read_bytes()
    _serve(server, mirror, name, gzip.compress(plain, mtime=0))
    assert resolve(name).read_bytes() == plain
    assert _leftovers(online) == [name]


def test_hash_mismatch_raises_and_leaves_nothing(mirror, online, server):
    _serve(server, mirror, NAME, (mirror / NAME).read_bytes() + b"999\ttampered\n")
    with pytest.raises(DataIntegrityError, match="does not match the registered"):
        resolve(NAME)
    assert _leftovers(online) == []


def test_corrupt_cache_is_refetched(mirror, online, server):
    data = _serve(server, mirror, NAME)
    (online / NAME).parent.mkdir(parents=True, exist_ok=True)
    (online / NAME).write_bytes(b"corrupt")
    assert resolve(NAME).read_bytes() == data
    assert len(server.requests) == 1


def test_server_down_without_mirror_names_the_fix(monkeypatch, online):
    with socket.socket() as s:                         # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("LAB_DATA_URL_BASE", base)
    with pytest.raises(DataUnavailableError) as info:
        resolve(NAME)
    msg = str(info.value)
    assert "LAB_DATA_MIRROR" in msg and f"{base}/{NAME}" in msg and "failed" in msg
    assert _leftovers(online) == []


def test_offline_skips_download(mirror, monkeypatch, online, server):
    _serve(server, mirror, NAME)
    monkeypatch.setenv("LAB_OFFLINE", "1")
    with pytest.raises(DataUnavailableError, match="LAB_DATA_MIRROR") as info:
        resolve(NAME)
    assert "LAB_OFFLINE" in str(info.value)
    assert server.requests == []


def test_real_url_used_without_override(monkeypatch, online):
    monkeypatch.delenv("LAB_DATA_URL_BASE")
    monkeypatch.setenv("LAB_OFFLINE", "1")
    with pytest.raises(DataUnavailableError) as info:
        resolve("trec-dl/bm25_top100_dl19.json")
    assert f"https://raw.githubusercontent.com/castorini/rank_llm/{RANK_LLM}/retrieve_results/BM25/retrieve_results_dl19.json" in str(info.value)


def test_mirror_missing_file_falls_through(mirror, monkeypatch, tmp_path, online, server):
    partial = tmp_path / "partial-mirror"
    (partial / "trec-dl").mkdir(parents=True)
    shutil.copy(mirror / "trec-dl/qrels.dl20-passage.txt", partial / "trec-dl")
    monkeypatch.setenv("LAB_DATA_MIRROR", str(partial))
    assert resolve("trec-dl/qrels.dl20-passage.txt") == partial / "trec-dl/qrels.dl20-passage.txt"
    assert server.requests == []
    data = _serve(server, mirror, NAME)
    assert resolve(NAME) == online / NAME and (online / NAME).read_bytes() == data


def test_mirror_dir_rules(monkeypatch, tmp_path):
    monkeypatch.setenv("LAB_DATA_MIRROR", str(tmp_path))
    assert sources.mirror_dir() == tmp_path
    monkeypatch.setenv("LAB_DATA_MIRROR", "")
    assert sources.mirror_dir() is None


def test_default_mirror_beside_repo_or_dvc_temp_copy(monkeypatch, tmp_path):
    (tmp_path / "shared" / "data").mkdir(parents=True)
    repo = tmp_path / "main"
    temp_copy = repo / ".dvc" / "tmp" / "exps" / "tmpabc"
    temp_copy.mkdir(parents=True)
    for root in (repo, temp_copy):
        (root / "params.yaml").write_text("profile: tiny\n")
    monkeypatch.delenv("LAB_DATA_MIRROR", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    for root in (repo, temp_copy):
        monkeypatch.chdir(root)
        assert sources.mirror_dir() == tmp_path / "shared" / "data"
