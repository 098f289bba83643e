"""Dry run of the paper teacher class (Qwen3VLEmbeddingTeacher) on a random-init *tiny* Qwen3-VL, through
transformers' own ``Qwen3VLProcessor``.

No Qwen weights or tokenizer here: the tokenizer is SmolLM2's ChatML BPE with the four Qwen vision tokens added,
the image processor is Qwen2-VL's (PIL backend), and the processor is the real ``Qwen3VLProcessor``: its
``apply_chat_template`` and ``__call__`` (kwargs routed to the image processor and tokenizer, one
``<|image_pad|>`` expanded per merged patch, ``mm_token_type_ids``) are what the teacher runs, and its output goes
into ``Qwen3VLModel`` as it is. Checked: page *images* through the vision tower, queries through the text path,
the upstream input format (QwenLM/Qwen3-VL-Embedding ``src/models/qwen3_vl_embedding.py``, as NanoVDR's
``nanovdr/teacher.py`` calls it): the conversation handed to the chat template (instructions, image first),
qwen-vl-utils resizing before a ``do_resize=False`` processor call (the image processor must not resize again),
truncation to ``max_length``, last-token pooling, unit vectors.

Not checked here: the checkpoint's own chat template (it ships with the weights; a ChatML template of the same
layout for a system + user turn stands in), and the video processor: it needs torchvision, whose PyPI wheels are
CUDA builds that do not import beside the CPU torch wheel this project installs, so where torchvision is missing
the processor is built without one (the teacher sends no video; only the constructor's type check is told).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
if not hasattr(transformers, "Qwen3VLModel"):
    pytest.skip("transformers without Qwen3-VL", allow_module_level=True)

VISION_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
# Stand-in for the checkpoint's chat_template.jinja: ChatML, list contents, an image as one vision block.
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
          "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}{% endif %}"
          "{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
PATCH, MERGE = 16, 2


def qwen3vl_processor(tok, images):
    """transformers' ``Qwen3VLProcessor`` over ``tok`` and ``images``, with its video processor when torchvision
    imports, else without one (see the module docstring)."""
    from transformers import Qwen3VLProcessor
    from transformers.processing_utils import ProcessorMixin

    try:
        import torchvision  # noqa: F401
        from transformers import Qwen3VLVideoProcessor

        return Qwen3VLProcessor(image_processor=images, tokenizer=tok, chat_template=CHATML,
                                video_processor=Qwen3VLVideoProcessor(patch_size=PATCH, merge_size=MERGE))
    except (ImportError, RuntimeError):
        pass
    check = ProcessorMixin.check_argument_for_proper_class
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ProcessorMixin, "check_argument_for_proper_class",
                   lambda self, name, arg: None if name == "video_processor" and arg is None else check(self, name, arg))
        return Qwen3VLProcessor(image_processor=images, tokenizer=tok, video_processor=None, chat_template=CHATML)


class Spy:
    """Wraps a processor instance's ``apply_chat_template`` and ``__call__`` (the real ones run), recording what the
    teacher passes and what the processor returns."""

    def __init__(self, processor):
        self.processor, self.chats, self.calls = processor, [], []
        render = processor.apply_chat_template

        def apply_chat_template(conversation, **kwargs):
            self.chats.append({"conversation": conversation, **kwargs})
            return render(conversation, **kwargs)

        processor.apply_chat_template = apply_chat_template

    def __getattr__(self, name):
        return getattr(self.processor, name)

    def __call__(self, **kwargs):
        out = self.processor(**kwargs)
        self.calls.append({**kwargs, "out": out})
        return out


@pytest.fixture(scope="module")
def parts():
    from transformers import Qwen2VLImageProcessorPil, Qwen3VLConfig, Qwen3VLModel

    from lab.models import load_tokenizer

    tok = load_tokenizer("smollm2-135m-instruct")
    tok.add_special_tokens({"additional_special_tokens": VISION_TOKENS})
    tok.padding_side = "right"                     # as the teacher loads the processor (padding_side="right")
    ids = dict(zip(VISION_TOKENS, tok.convert_tokens_to_ids(VISION_TOKENS)))
    cfg = Qwen3VLConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 2, 2],
                                          "mrope_interleaved": True}),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                           patch_size=PATCH, spatial_merge_size=MERGE, temporal_patch_size=2,
                           deepstack_visual_indexes=[0], num_position_embeddings=64),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    torch.manual_seed(0)
    model = Qwen3VLModel(cfg).eval()
    # min/max pixels far below the 160 x 192 pages: were the processor to resize again, the grid would show it
    images = Qwen2VLImageProcessorPil(patch_size=PATCH, merge_size=MERGE, temporal_patch_size=2,
                                      min_pixels=64 * 64, max_pixels=128 * 128)
    return model, Spy(qwen3vl_processor(tok, images)), tok


@pytest.fixture(scope="module")
def teacher(parts):
    from lab.retrieval.teachers import Qwen3VLEmbeddingTeacher

    model, processor, _ = parts
    return Qwen3VLEmbeddingTeacher(model=model, processor=processor, batch_size=2)


def test_the_processor_is_transformers_own(parts):
    from transformers import Qwen3VLProcessor

    assert type(parts[1].processor) is Qwen3VLProcessor


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


def test_inputs_are_formatted_as_upstream(teacher, parts, tmp_path):
    from lab.data.pages import render_pages

    _, proc, tok = parts
    pages = render_pages([("d1", "lobsters")], tmp_path, width=160, height=200, font_size=10, progress=False)
    proc.chats.clear()
    proc.calls.clear()
    teacher.encode_pages(pages, progress=False)
    teacher.encode_queries(["what is a volcano"], progress=False)
    # 1. what goes into the chat template: upstream format_model_input's conversation, generation prompt on
    page_chat, query_chat = (c["conversation"] for c in proc.chats)
    assert all(c["tokenize"] is False and c["add_generation_prompt"] is True for c in proc.chats)
    assert page_chat[0] == {"role": "system", "content": [{"type": "text", "text": "Represent the user's input."}]}
    (image_part,) = page_chat[1]["content"]
    assert page_chat[1]["role"] == "user" and image_part["type"] == "image"
    assert (image_part["min_pixels"], image_part["max_pixels"]) == (4 * 32 * 32, 1800 * 32 * 32)
    assert query_chat == [
        {"role": "system", "content": [{"type": "text", "text": "Find a document image that matches the given query."}]},
        {"role": "user", "content": [{"type": "text", "text": "what is a volcano"}]}]
    # 2. the processor call: upstream kwargs, the image already resized by qwen-vl-utils' rule
    page_call, query_call = proc.calls
    for call in proc.calls:
        assert call["truncation"] is True and call["max_length"] == 8192 and call["do_resize"] is False
        assert call["padding"] is True
    assert [im.size for im in page_call["images"]] == [(160, 192)] and page_call["images"][0].mode == "RGB"
    assert query_call["images"] is None
    # 3. what the real processor made of it: no second resize (grid = 192/16 x 160/16 patches), one <|image_pad|>
    #    per merged 2 x 2 patch, mm_token_type_ids marking exactly those, the page chat's own text around them
    enc = page_call["out"]
    assert enc["image_grid_thw"].tolist() == [[1, 192 // PATCH, 160 // PATCH]]
    pad = tok.convert_tokens_to_ids("<|image_pad|>")
    is_pad = enc["input_ids"][0] == pad
    assert int(is_pad.sum()) == (192 // PATCH) * (160 // PATCH) // MERGE ** 2 == 30
    assert torch.equal(enc["mm_token_type_ids"][0].bool(), is_pad)
    assert enc["pixel_values"].shape[0] == (192 // PATCH) * (160 // PATCH)
    text = tok.decode(enc["input_ids"][0][~is_pad])
    assert text.startswith("<|im_start|>system\nRepresent the user's input.<|im_end|>\n<|im_start|>user\n")
    assert text.endswith("<|vision_start|><|vision_end|><|im_end|>\n<|im_start|>assistant\n")
    q = query_call["out"]
    assert "pixel_values" not in q and not q["mm_token_type_ids"].any()


def test_truncation_reaches_the_tokenizer(parts):
    from lab.retrieval.teachers import Qwen3VLEmbeddingTeacher

    model, proc, _ = parts
    short = Qwen3VLEmbeddingTeacher(model=model, processor=proc, batch_size=2, max_length=12)
    proc.calls.clear()
    vec = short.encode_queries(["what is a volcano " * 20], progress=False)
    assert proc.calls[0]["out"]["input_ids"].shape == (1, 12)
    assert np.isclose(np.linalg.norm(vec), 1, atol=1e-5)


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


def test_pages_decoded_per_batch_longest_first_results_in_input_order(teacher, parts, tmp_path, monkeypatch):
    """Issue 10: every page image of a pool was decoded before the first batch; now a batch's pages are decoded
    when it runs, batches are formed by pixel count (header only), and vectors come back in input order."""
    from lab.data.pages import Page, render_pages

    _, proc, _ = parts
    small = render_pages([("s1", "a"), ("s2", "b")], tmp_path / "s", width=96, height=96, font_size=10,
                         progress=False)
    big = render_pages([("b1", "c"), ("b2", "d")], tmp_path / "b", width=160, height=200, font_size=10,
                       progress=False)
    pages = [small[0], big[0], small[1], big[1]]
    events = []
    load = Page.load_image
    monkeypatch.setattr(Page, "load_image", lambda self, mode="RGB": events.append(("load", self.docid))
                        or load(self, mode))
    call = type(proc).__call__
    monkeypatch.setattr(type(proc), "__call__", lambda self, **kw: events.append(("batch",)) or call(self, **kw))
    vecs = teacher.encode_pages(pages, progress=False)
    assert events == [("load", "b1"), ("load", "b2"), ("batch",), ("load", "s1"), ("load", "s2"), ("batch",)]
    one_by_one = np.stack([teacher.encode_pages([p], progress=False)[0] for p in pages])
    assert np.allclose(vecs, one_by_one, atol=1e-4)
