"""Where things live: the repo root, caches, and atomic file writes.

The repo root is found from the working directory (or ``DVC_ROOT``), never from ``__file__``:
``dvc exp run --temp/--queue`` runs stages in a temporary copy of the repo while ``lab`` stays
installed from the original checkout, so ``__file__`` would point into the wrong tree.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

_MARKERS = ("dvc.yaml", "params.yaml")


def repo_root(start: str | os.PathLike | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: cwd) that holds ``params.yaml``.

    The cwd wins over ``DVC_ROOT``: under ``dvc exp run --temp`` DVC runs the stage in a temporary
    workspace (cwd) while ``DVC_ROOT`` still names the original checkout, and outputs written there
    would land in the wrong tree. ``DVC_ROOT`` is the fallback for commands run outside the repo.
    """
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "params.yaml").is_file():
            return folder
    if start is None and os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    raise FileNotFoundError(
        f"no params.yaml at or above {here}: run from inside the lab repository or set DVC_ROOT"
    )


def cache_dir(*parts: str) -> Path:
    """User-level cache shared by clones, temp experiment copies and tests (``LAB_CACHE``).

    Packaged-model conversions (~1.3 GB for the smoke set) and downloads go here once.
    """
    base = Path(os.environ.get("LAB_CACHE") or Path.home() / ".cache" / "lab")
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it onto ``path`` only if the block succeeds.

    A crash leaves the old ``path`` (or nothing) in place, never a half-written file or folder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    umask = os.umask(0)
    os.umask(umask)
    # mkdtemp/mkstemp create 0700/0600; published outputs should read like any other file or folder.
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        os.chmod(tmp, 0o777 & ~umask)
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        if is_dir:
            if path.exists():
                old = path.with_name(f".{path.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
        else:
            os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write UTF-8 text."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def dumps_json(obj: Any) -> str:
    """Byte-stable JSON: sorted keys, fixed indent, trailing newline."""
    return json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write byte-stable JSON (sorted keys)."""
    return write_text(path, dumps_json(obj))
