"""Where a named data file comes from: mirror, verified cache, or a verified public download.

A *name* is a path relative to the data mirror, e.g. ``trec-dl/qrels.dl19-passage.txt``; the registry
(``registry.yaml`` beside this module) maps each name to its public URL and SHA-256. :func:`resolve`
tries, in order:

1. the mirror folder ``LAB_DATA_MIRROR`` (laid out exactly like ``shared/data``). When the variable is
   unset, ``<repo root>/../shared/data`` is used if it exists (that is where the project keeps it; the
   nearest ``shared/data`` beside a further ancestor also counts, for DVC's temporary experiment
   copies inside ``.dvc/tmp``); set it to the empty string to disable the mirror. The mirror is trusted as is: it is read-only and
   ``sha256sum -c SHA256SUMS`` checks it (the unit tests check it against the registry too);
2. the user cache ``cache_dir("data")/<name>``, used only if its SHA-256 matches the registry;
3. a download (urllib, ``LAB_DATA_TIMEOUT`` seconds, default 60) to a temporary sibling, gunzipped
   when the payload is gzip (Anserini ships the BEIR topics as ``.tsv.gz``; the registry hash is of the
   gunzipped bytes), checked against the SHA-256 and only then renamed into the cache. A mismatch
   deletes the temporary file and raises :class:`DataIntegrityError`. ``LAB_OFFLINE=1`` skips this step.
   ``LAB_DATA_URL_BASE`` replaces the registry URL by ``<base>/<name>`` (a server laid out like the
   mirror: loopback servers in tests, an internal mirror); the hash check still applies, so the
   override can change where bytes come from but never which bytes are accepted;
4. otherwise :class:`DataUnavailableError`, naming ``LAB_DATA_MIRROR`` and the URL tried.

Hugging Face *dataset repos* (ViDoRe, NanoVDR-Train, rank_zephyr, LaSER-Training, BRIGHT) are not registry files:
:func:`hub_dataset_folder` is their one resolver. Order: an explicit ``root`` holding ``<owner>/<name>/``; the
mirror's ``hf-datasets/<owner>/<name>/`` (laid out like the Hub repo); ``huggingface_hub.snapshot_download`` of only
the needed files (:func:`hf_snapshot`, the seam tests replace; ``LAB_OFFLINE=1``: the local HF cache only), at each
of ``revisions`` in turn; otherwise :class:`DataUnavailableError` naming everything tried.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.client
import importlib.resources
import os
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import yaml

from lab.paths import atomic_path, cache_dir, repo_root

__all__ = ["Entry", "registry", "resolve", "mirror_dir", "sha256_file", "DataUnavailableError", "DataIntegrityError",
           "hub_dataset_folder", "hf_snapshot", "HF_MIRROR_SUBDIR"]

_GZIP_MAGIC = b"\x1f\x8b"
HF_MIRROR_SUBDIR = "hf-datasets"       # <mirror>/hf-datasets/<owner>/<name>/ mirrors the Hub dataset repo <owner>/<name>


class DataUnavailableError(FileNotFoundError):
    """No mirror copy, no verified cached copy, and no download possible."""


class DataIntegrityError(ValueError):
    """A downloaded (or cached) file does not have the registered SHA-256."""


@dataclass(frozen=True)
class Entry:
    name: str       # path relative to the mirror root
    url: str        # public source (pinned commit or tag)
    sha256: str     # of the file as stored in the mirror (gunzipped where the source is .gz)
    gunzip: bool = False


@functools.lru_cache(maxsize=1)
def registry() -> dict[str, Entry]:
    """Every known file, ``name -> Entry`` (read once from the packaged ``registry.yaml``)."""
    text = importlib.resources.files("lab.data").joinpath("registry.yaml").read_text(encoding="utf-8")
    files = yaml.safe_load(text)["files"]
    return {name: Entry(name, e["url"], e["sha256"], bool(e.get("gunzip", False))) for name, e in files.items()}


def entry(name: str) -> Entry:
    try:
        return registry()[name]
    except KeyError:
        raise KeyError(f"unknown data file {name!r}; registered: {len(registry())} files, e.g. {sorted(registry())[:3]}") from None


def mirror_dir() -> Path | None:
    """The mirror root, or ``None`` when there is none (see the module docstring for the rules)."""
    env = os.environ.get("LAB_DATA_MIRROR")
    if env is not None:
        return Path(env).expanduser() if env.strip() else None
    try:
        root = repo_root()
    except FileNotFoundError:      # not inside the repo (an installed wheel, a notebook elsewhere)
        return None
    # <root>/../shared/data first; further ancestors too, because `dvc exp run --temp/--queue` runs in
    # a copy under <root>/.dvc/tmp/exps/, whose parent has no shared/ beside it.
    for folder in root.parents:
        if (folder / "shared" / "data").is_dir():
            return folder / "shared" / "data"
    return None


def offline() -> bool:
    return os.environ.get("LAB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@functools.lru_cache(maxsize=256)
def _verified(path: str, size: int, mtime_ns: int, expected: str) -> bool:
    # Keyed on size and mtime so a cached file is hashed once per process, not on every resolve().
    return sha256_file(path) == expected


def _cache_ok(path: Path, expected: str) -> bool:
    if not path.is_file():
        return False
    st = path.stat()
    return _verified(str(path), st.st_size, st.st_mtime_ns, expected)


def source_url(e: Entry) -> str:
    base = os.environ.get("LAB_DATA_URL_BASE", "").strip()
    return f"{base.rstrip('/')}/{e.name}" if base else e.url


def resolve(name: str) -> Path:
    """A local path holding the exact bytes of data file ``name`` (see module docstring for the order)."""
    e = entry(name)
    tried: list[str] = []

    mirror = mirror_dir()
    if mirror is not None:
        candidate = mirror / name
        if candidate.is_file():
            return candidate
        tried.append(f"mirror {mirror} (no {name})")
    else:
        tried.append("mirror: LAB_DATA_MIRROR unset and no ../shared/data beside the repo")

    cached = cache_dir("data") / name
    if _cache_ok(cached, e.sha256):
        return cached
    tried.append(f"cache {cached} ({'hash mismatch' if cached.exists() else 'absent'})")

    url = source_url(e)
    if offline():
        tried.append(f"download {url} skipped (LAB_OFFLINE is set)")
    else:
        try:
            return download(e, cached, url)
        except DataIntegrityError:
            raise
        except (OSError, http.client.HTTPException, EOFError) as err:   # URLError, HTTPError, timeouts are OSErrors
            tried.append(f"download {url} failed: {err}")
    raise DataUnavailableError(
        f"data file {name!r} is not available. Tried: " + "; ".join(tried) + ". "
        f"Set LAB_DATA_MIRROR to a folder laid out like shared/data (holding {name}), "
        f"or allow downloads (unset LAB_OFFLINE) from {url}"
    )


def download(e: Entry, dest: Path, url: str | None = None) -> Path:
    """Fetch ``e`` to ``dest`` through a temporary sibling; the rename happens only after the hash check."""
    url = url or source_url(e)
    timeout = float(os.environ.get("LAB_DATA_TIMEOUT", "60"))
    with atomic_path(dest) as tmp:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
            shutil.copyfileobj(resp, out, 1 << 20)
        with open(tmp, "rb") as f:
            is_gzip = f.read(2) == _GZIP_MAGIC
        if is_gzip and (e.gunzip or url.endswith(".gz")):
            raw = tmp.with_name(tmp.name + ".gz")
            os.replace(tmp, raw)
            try:
                with gzip.open(raw, "rb") as src, open(tmp, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
            finally:
                raw.unlink(missing_ok=True)
        got = sha256_file(tmp)
        if got != e.sha256:   # raising inside atomic_path deletes tmp: nothing is left behind
            raise DataIntegrityError(
                f"{url}: SHA-256 {got} does not match the registered {e.sha256} for {e.name}; "
                "the download was deleted (upstream changed, or the URL/base override is wrong)"
            )
    return dest


# ------------------------------------------------------------------------------------- Hub dataset repos
def hf_snapshot(repo_id: str, allow_patterns: Sequence[str], revision: str | None, local_only: bool) -> str:
    """``snapshot_download`` of dataset repo ``repo_id``, only ``allow_patterns`` (the seam tests replace)."""
    from huggingface_hub import snapshot_download

    return snapshot_download(repo_id=repo_id, repo_type="dataset", revision=revision,
                             allow_patterns=list(allow_patterns), local_files_only=local_only,
                             endpoint=os.environ.get("HF_ENDPOINT") or None)


def hub_dataset_folder(repo: str, *, patterns: Sequence[str], has_files: Callable[[Path], bool], what: str,
                       root: str | os.PathLike | None = None, strict_root: bool = True,
                       revisions: Sequence[str | None] = (None,)) -> Path:
    """A local folder laid out like Hub dataset repo ``repo`` for which ``has_files(folder)`` holds.

    ``patterns``: the globs to download (and to name in errors); ``what``: how errors name the data (e.g.
    ``"ViDoRe set v1/docvqa"``). ``root`` given: ``root/<repo>`` must hold the files (``strict_root``: else raise;
    otherwise fall through to the mirror and the Hub). ``revisions``: tried in order (``None`` = main), e.g.
    ``(None, "refs/convert/parquet")`` for the parquet-converter branch.
    """
    tried: list[str] = []
    if root:
        folder = Path(root) / repo
        if has_files(folder):
            return folder
        if strict_root:
            raise DataUnavailableError(f"{folder}: no {list(patterns)} ({what}; root {root} given)")
        tried.append(f"root {folder} (no {list(patterns)})")
    mirror = mirror_dir()
    if mirror is not None:
        folder = mirror / HF_MIRROR_SUBDIR / repo
        if has_files(folder):
            return folder
        tried.append(f"mirror {folder} (no {list(patterns)})")
    else:
        tried.append("mirror: LAB_DATA_MIRROR unset and no ../shared/data beside the repo")
    local = offline()
    for rev in revisions:
        where = (f"Hugging Face dataset {repo}@{rev or 'main'}"
                 f"{' (local cache only: LAB_OFFLINE is set)' if local else ''}")
        try:
            folder = Path(hf_snapshot(repo, list(patterns), rev, local))
        except Exception as err:      # network, auth, unknown revision, LocalEntryNotFound under LAB_OFFLINE
            tried.append(f"{where}: {type(err).__name__}: {err}")
            continue
        if has_files(folder):
            return folder
        tried.append(f"{where}: snapshot {folder} has none of {list(patterns)}")
    raise DataUnavailableError(f"{what} is not available. Tried: " + "; ".join(tried) +
                               f". Put the repo's files under <LAB_DATA_MIRROR>/{HF_MIRROR_SUBDIR}/{repo}/ "
                               "or allow Hub downloads.")
