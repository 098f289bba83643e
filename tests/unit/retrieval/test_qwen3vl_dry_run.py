"""Dry run of the paper teacher class (Qwen3VLEmbeddingTeacher) on a random-init *tiny* Qwen3-VL.

No Qwen weights, tokenizer or torchvision here: the tokenizer is SmolLM2's ChatML BPE with the four
Qwen vision tokens added, and a minimal processor does what ``Qwen3VLProcessor`` does (chat template,
Qwen2-VL image patches, one ``<|image_pad|>`` per merged patch). It checks that page *images* go through
the vision tower, queries through the text path, and that last-token pooling gives unit vectors.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
if not hasattr(transformers, "Qwen3VLModel"):
    pytest.skip("transformers without Qwen3-VL", allow_module_level=True)

VISION_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
            "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}{% endif %}"
            "{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


class TinyProcessor:
    """The parts of Qwen3VLProcessor the teacher uses."""

    def __init__(self, tokenizer, image_processor):
        self.tok, self.images = tokenizer, image_processor

    def apply_chat_template(self, chat, tokenize=False, add_generation_prompt=True):
        return self.tok.apply_chat_template(chat, tokenize=tokenize, add_generation_prompt=add_generation_prompt,
                                            chat_template=TEMPLATE)

    def __call__(self, text, images=None, padding=True, return_tensors="pt"):
        from transformers import BatchFeature

        out = {}
        if images:
            out = dict(self.images(images=images, return_tensors="pt"))
            merge = self.images.merge_size ** 2
            counts = iter((out["image_grid_thw"].prod(-1) // merge).tolist())
            text = [t.replace("<|image_pad|>", "<|image_pad|>" * next(counts)) if "<|image_pad|>" in t else t
                    for t in text]
        enc = self.tok(text, padding=padding, return_tensors=return_tensors)
        mm = (enc["input_ids"] == self.tok.convert_tokens_to_ids("<|image_pad|>")).long()   # 1 = image token
        return BatchFeature({**out, "input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                             "mm_token_type_ids": mm})


@pytest.fixture(scope="module")
def teacher():
    from transformers import Qwen2VLImageProcessorPil, Qwen3VLConfig, Qwen3VLModel

    from lab.models import load_tokenizer
    from lab.retrieval.teachers import Qwen3VLEmbeddingTeacher

    tok = load_tokenizer("smollm2-135m-instruct")
    tok.add_special_tokens({"additional_special_tokens": VISION_TOKENS})
    tok.padding_side = "right"
    ids = dict(zip(VISION_TOKENS, tok.convert_tokens_to_ids(VISION_TOKENS)))
    cfg = Qwen3VLConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 2, 2],
                                          "mrope_interleaved": True}),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                           patch_size=16, spatial_merge_size=2, temporal_patch_size=2, deepstack_visual_indexes=[0],
                           num_position_embeddings=64),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    torch.manual_seed(0)
    model = Qwen3VLModel(cfg).eval()
    images = Qwen2VLImageProcessorPil(patch_size=16, merge_size=2, temporal_patch_size=2,
                                      min_pixels=64 * 64, max_pixels=128 * 128)
    return Qwen3VLEmbeddingTeacher(model=model, processor=TinyProcessor(tok, images), batch_size=2)


def test_pages_go_through_the_vision_tower_and_queries_through_text(teacher, tmp_path):
    from lab.data.pages import render_pages

    pages = render_pages([("d1", "a page about lobsters"), ("d2", "volcanoes and tax, a longer page of text"),
                          ("d3", "third")], tmp_path, width=160, height=200, font_size=10, progress=False)
    pe = teacher.encode_pages(pages, progress=False)
    qe = teacher.encode_queries(["lobster", "what is a volcano", "tax"], progress=False)
    assert pe.shape == qe.shape == (3, teacher.dim) == (3, 64)
    assert np.allclose(np.linalg.norm(pe, axis=1), 1, atol=1e-5) and np.allclose(np.linalg.norm(qe, axis=1), 1, atol=1e-5)
    blank = render_pages([("d4", "")], tmp_path, width=160, height=200, font_size=10, progress=False)
    assert not np.allclose(teacher.encode_pages(blank, progress=False)[0], pe[0], atol=1e-4)   # pixels matter
    single = teacher.encode_queries(["what is a volcano"], progress=False)[0]
    assert np.allclose(single, qe[1], atol=1e-4)          # padding does not change a query's vector
