"""``hf:`` refs: the real snapshot_download against a loopback fake Hub, offline behaviour, patterns."""

from __future__ import annotations

from fnmatch import fnmatch

import pytest

from lab.models import HF_ALLOW_PATTERNS, HubUnreachableError, load_model, resolve
from lab.models import registry, store


def _allowed(name: str) -> bool:
    return (any(fnmatch(name, p) for p in registry.HF_ALLOW_PATTERNS)
            and not any(fnmatch(name, p) for p in registry.HF_IGNORE_PATTERNS))


def test_patterns_exclude_pickles():
    for name in ("pytorch_model.bin", "model.pt", "weights.pth", "x.pkl", "tf_model.h5", "flax_model.msgpack",
                 "model.onnx", "model.gguf", "training_args.bin", "onnx/model.onnx"):
        assert not _allowed(name), name
    for name in ("model.safetensors", "model-00001-of-00002.safetensors", "model.safetensors.index.json",
                 "config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "merges.txt",
                 "tokenizer.model", "chat_template.jinja", "modules.json", "1_Pooling/config.json"):
        assert _allowed(name), name
    assert HF_ALLOW_PATTERNS == registry.HF_ALLOW_PATTERNS


def test_download_from_loopback_hub(fake_hub, tmp_path, monkeypatch):
    folder = resolve("hf:org/tiny-bert")
    assert folder.name == fake_hub.commit
    assert "pytorch_model.bin" not in fake_hub.downloaded() and "README.md" not in fake_hub.downloaded()
    assert {"config.json", "model.safetensors", "tokenizer.json", "vocab.txt"} <= fake_hub.downloaded()
    model = load_model("hf:org/tiny-bert")
    assert model.config.hidden_size == 64

    out = resolve("hf:org/tiny-bert", out_dir=tmp_path / "models" / "encoder")
    assert not (out / "pytorch_model.bin").exists()
    marker = store.read_marker(out)
    assert marker["source"] == {"kind": "hf", "repo": "org/tiny-bert", "revision": None, "commit": fake_hub.commit}
    assert store.check_folder(out) is None

    # The snapshot now sits in the HF cache: offline resolution finds it without the server.
    fake_hub.close()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve("hf:org/tiny-bert") == folder


def test_offline_miss_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    with pytest.raises(HubUnreachableError) as err:
        resolve("hf:sentence-transformers/all-MiniLM-L6-v2@main")
    msg = str(err.value)
    assert "hf:sentence-transformers/all-MiniLM-L6-v2@main" in msg and "HF_HUB_OFFLINE" in msg
    assert "packaged 'all-minilm-l6-v2'" in msg  # the offline alternative is named


def test_unreachable_hub_is_a_clear_error(tmp_path, monkeypatch):
    import socket

    with socket.socket() as s:  # a loopback port with nobody listening: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    with pytest.raises(HubUnreachableError, match=r"cannot get hf:org/missing: the Hugging Face Hub is unreachable"):
        resolve("hf:org/missing")


def test_snapshot_download_arguments(monkeypatch, tmp_path):
    import huggingface_hub

    seen = {}
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")

    def fake(repo_id, **kwargs):
        seen.update(kwargs, repo_id=repo_id)
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve("hf:org/name@v1.0") == tmp_path
    assert seen["repo_id"] == "org/name" and seen["revision"] == "v1.0"
    assert seen["local_files_only"] is True
    assert "*.bin" in seen["ignore_patterns"] and "*.bin" not in seen["allow_patterns"]


def test_pickle_only_repo_is_refused(monkeypatch, tmp_path):
    import huggingface_hub

    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, **kw: str(tmp_path))
    with pytest.raises(Exception, match="no safetensors weights"):
        resolve("hf:org/old-model")
