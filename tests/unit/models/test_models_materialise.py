"""materialise(): the DVC models stage's folders and byte-stable manifest."""

from __future__ import annotations

import pytest

from lab.models import materialise, store
from lab.paths import dumps_json


def test_materialise_tiny_profile_is_byte_stable(isolated_cache, tmp_path):
    refs = {"encoder": "random:bert-tiny", "encoder_small": "random:bert-tiny", "other": "random:distilbert-tiny"}
    first = materialise(refs, tmp_path / "models")
    second = materialise(refs, tmp_path / "models")
    assert dumps_json(first) == dumps_json(second)
    assert list(first) == sorted(refs)
    entry = first["encoder"]
    assert {"role", "ref", "architecture", "parameters", "hidden_size", "sha256", "sanity"} <= set(entry)
    assert entry["architecture"] == "BertModel" and entry["hidden_size"] == 64
    assert entry["sha256"] == store.sha256_file(tmp_path / "models" / "encoder" / "model.safetensors")
    assert entry["sha256"] == first["encoder_small"]["sha256"]
    assert isinstance(entry["sanity"]["mean_pooled_l2"], float)
    for role in refs:
        assert store.check_folder(tmp_path / "models" / role) is None
    assert str(tmp_path) not in dumps_json(first)  # no absolute paths in the manifest


def test_materialise_rejects_odd_role_names(isolated_cache, tmp_path):
    with pytest.raises(ValueError, match="folder name"):
        materialise({"../escape": "random:bert-tiny"}, tmp_path)


@pytest.mark.slow
def test_materialise_causal_lm_sanity(tmp_path):
    manifest = materialise({"llm": "smollm2-135m-instruct", "tiny": "random:llama-tiny"}, tmp_path)
    assert manifest["llm"]["sanity"]["next_token"] == " Paris"
    assert manifest["llm"]["parameters"] == 134_515_008
    assert manifest["tiny"]["kind"] == "causal_lm" and manifest["tiny"]["hidden_size"] == 64
