"""Dry run of the paper teacher class (Qwen3VLEmbeddingTeacher) on a random-init *tiny* Qwen3-VL.

No Qwen weights, tokenizer or torchvision here: the tokenizer is SmolLM2's ChatML BPE with the four
Qwen vision tokens added, and a minimal processor does what ``Qwen3VLProcessor`` does (chat template,
Qwen2-VL image patches, one ``<|image_pad|>`` per merged patch). It checks that page *images* go through
the vision tower, queries through the text path, and the upstream input format (QwenLM/Qwen3-VL-Embedding
``src/models/qwen3_vl_embedding.py``, as NanoVDR's ``nanovdr/teacher.py`` calls it): instructions,
chat layout, qwen-vl-utils resizing before a ``do_resize=False`` processor call, truncation to 8192,
last-token pooling, unit vectors.
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
        self.calls: list[dict] = []

    def apply_chat_template(self, chat, tokenize=False, add_generation_prompt=True):
        return self.tok.apply_chat_template(chat, tokenize=tokenize, add_generation_prompt=add_generation_prompt,
                                            chat_template=TEMPLATE)

    def __call__(self, text, images=None, padding=True, return_tensors="pt", **kwargs):
        from transformers import BatchFeature

        self.calls.append({"text": list(text), "images": images, **kwargs})
        out = {}
        if images:
            out = dict(self.images(images=images, return_tensors="pt", do_resize=kwargs.get("do_resize", True)))
            merge = self.images.merge_size ** 2
            counts = iter((out["image_grid_thw"].prod(-1) // merge).tolist())
            text = [t.replace("<|image_pad|>", "<|image_pad|>" * next(counts)) if "<|image_pad|>" in t else t
                    for t in text]
        enc = self.tok(text, padding=padding, return_tensors=return_tensors, truncation=kwargs.get("truncation", False),
                       max_length=kwargs.get("max_length"))
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


def test_inputs_are_formatted_as_upstream(teacher, tmp_path):
    from lab.data.pages import render_pages

    pages = render_pages([("d1", "lobsters")], tmp_path, width=160, height=200, font_size=10, progress=False)
    proc = teacher._processor
    proc.calls.clear()
    teacher.encode_pages(pages, progress=False)
    teacher.encode_queries(["what is a volcano"], progress=False)
    page_call, query_call = proc.calls
    for call in proc.calls:
        assert call["truncation"] is True and call["max_length"] == 8192 and call["do_resize"] is False
    assert page_call["text"][0].startswith("<|im_start|>system\nRepresent the user's input.<|im_end|>\n"
                                           "<|im_start|>user\n<|vision_start|>")
    assert page_call["text"][0].endswith("<|vision_end|><|im_end|>\n<|im_start|>assistant\n")
    assert [im.size for im in page_call["images"]] == [(160, 192)]          # 200 -> 192: a multiple of 32
    assert page_call["images"][0].mode == "RGB"
    assert query_call["images"] is None
    assert query_call["text"] == ["<|im_start|>system\nFind a document image that matches the given query.<|im_end|>\n"
                                  "<|im_start|>user\nwhat is a volcano<|im_end|>\n<|im_start|>assistant\n"]


def test_instruction_resize_and_pooling_rules():
    from PIL import Image

    from lab.retrieval.teachers import (Qwen3VLEmbeddingTeacher, _pool_last, qwen3vl_image, qwen3vl_instruction,
                                        smart_resize)

    assert qwen3vl_instruction("Find the page") == "Find the page."
    assert qwen3vl_instruction("  Which page?  ") == "Which page?"
    assert qwen3vl_instruction("") == qwen3vl_instruction(None) == "Represent the user's input."
    assert Qwen3VLEmbeddingTeacher(model=object(), processor=object(), query_instruction="Find it").query_instruction == "Find it."
    assert smart_resize(200, 160) == (192, 160)
    assert smart_resize(4000, 3000) == (1536, 1152)          # over 1800 * 32**2 pixels: scaled down, floored
    assert smart_resize(10, 10) == (64, 64)                  # under 4 * 32**2 pixels: scaled up, ceiled
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(10, 2100)
    clear = qwen3vl_image(Image.new("RGBA", (40, 40), (0, 0, 0, 0)))
    assert clear.mode == "RGB" and clear.size == (64, 64) and clear.getpixel((5, 5)) == (255, 255, 255)  # on white
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)             # [B, T, H]
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert torch.equal(_pool_last(hidden, right), torch.stack([hidden[0, 1], hidden[1, 3]]))
    assert torch.equal(_pool_last(hidden, left), hidden[:, 3])
