"""NanoVDR paper-profile data and table on fixtures: the NanoVDR-Train queries and validation split feed the index
split; the (alignment, ranking-KL) sweep + hard-label InfoNCE train through the one trainer."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

from lab.data.formats import save_npy
from lab.methods.nanovdr import distill as nanovdr_distill
from lab.methods.nanovdr import index as nanovdr_index
from lab.retrieval import distill as D
from tests.unit.data.nanovdr_train_fixtures import ROWS, VAL, write_dataset, write_split


def test_split_queries_from_nanovdr_train(fake_data, make_cfg, tmp_path):
    write_dataset(tmp_path)
    cfg = make_cfg(data_dir=str(fake_data), train_source="nanovdr_train", train_dir=str(tmp_path), train_queries=0,
                   val_queries=0, per_language=2, languages=[], translator="none")
    split = nanovdr_index.split_queries(cfg, seed=0)
    train_ids = [q.qid for q in split["train"]]
    assert set(train_ids) <= {"q0", "q1", "q2", "q3", "q4", "q6"} and {"q0", "q1", "q3"} <= set(train_ids)
    assert len(train_ids) == 5                                   # de capped at 2 of 3
    assert [q.qid for q in split["val"]] == [v[0] for v in VAL]  # the data set's validation split, not a slice
    assert [q.qid for q in split["eval"]][:1] == ["19000"] and not {q.qid for q in split["eval"]} & set(train_ids)
    few = nanovdr_index.split_queries(make_cfg(data_dir=str(fake_data), train_source="nanovdr_train",
                                               train_dir=str(tmp_path), train_queries=2, val_queries=1,
                                               languages=[], translator="none"), seed=0)
    assert (len(few["train"]), len(few["val"])) == (2, 1)
    leaked = tmp_path / "leak"
    write_split(leaked / "nanovdr" / "NanoVDR-Train", "train", ROWS + [("x", split["eval"][0].text, "en", "s")])
    write_split(leaked / "nanovdr" / "NanoVDR-Train", "validation", VAL)
    with pytest.raises(ValueError, match="test .* queries found in training"):
        nanovdr_index.split_queries(make_cfg(data_dir=str(fake_data), train_source="nanovdr_train",
                                             train_dir=str(leaked), languages=[], translator="none"), seed=0)


@pytest.fixture
def index_with_labels(tiny_index, tmp_path):
    cfg, index_dir, _ = tiny_index
    folder = tmp_path / "index"
    shutil.copytree(index_dir, folder)
    art = nanovdr_index.load_index(folder)
    labels = nanovdr_index.hard_labels(cfg, art.queries, art.pools["train"])
    for split, pos in labels.items():
        save_npy(folder / "topk" / f"{split}_positives.npy", pos)
    return cfg, folder, labels, art


def test_hard_labels_are_judged_pages_of_the_training_pool(index_with_labels):
    cfg, _, labels, art = index_with_labels
    from lab.data.trecdl import load_materialised

    qrels = load_materialised(cfg.data_dir, cfg.train_dataset, []).qrels.judgements
    labelled = [(q, p) for q, p in zip(art.queries["train"], labels["train"]) if p >= 0]
    assert labelled and len(labelled) == sum(q.qid in qrels for q in art.queries["train"])   # DL20 queries only
    for q, p in labelled:
        doc = art.pools["train"][p].docid
        assert qrels[q.qid][doc] == max(g for d, g in qrels[q.qid].items() if d in {x.docid for x in art.pools["train"]})
    assert (labels["val"] == -1).all()                           # validation: unlabelled MS MARCO pool queries


@pytest.mark.slow
def test_paper_table_trains_and_the_pure_alignment_point_is_cosine(index_with_labels, make_cfg, tmp_path):
    cfg, folder, _, _ = index_with_labels
    cfg = make_cfg(data_dir=cfg.data_dir, index_dir=str(folder), train={"epochs": 1},
                   objectives=list(D.paper_objectives()))
    curves = {o: nanovdr_distill.distill(cfg, o, tmp_path / f"{o}.safetensors", seed=1, progress=False, cache=None)
              for o in (*cfg.objectives, "cosine")}
    for o, c in curves.items():
        assert math.isfinite(c["train_loss"].iloc[0]) and math.isfinite(c["val_cosine"].iloc[0]), o
        assert (tmp_path / f"{o}.safetensors").is_file()
    # (1, 0) is the cosine objective: the same steps, the same numbers
    assert curves["align1_kl0"]["train_loss"].tolist() == pytest.approx(curves["cosine"]["train_loss"].tolist(),
                                                                        rel=1e-6)
    # the KL weight matters: (1, 1) trains a different student than (1, 0)
    assert curves["align1_kl1"]["train_loss"].iloc[0] != pytest.approx(curves["align1_kl0"]["train_loss"].iloc[0])
    assert curves["infonce_hard"]["train_loss"].iloc[0] > 0


@pytest.mark.slow
def test_index_from_nanovdr_train_pools_the_queries_own_pages(fake_data, make_cfg, lab_cache, tmp_path):
    from lab.retrieval.dense import EmbeddingCache

    write_dataset(tmp_path / "hub")
    cfg = make_cfg(data_dir=str(fake_data), train_source="nanovdr_train", train_dir=str(tmp_path / "hub"),
                   train_queries=0, val_queries=0, languages=[], translator="none",
                   objectives=["align1_kl0.5", "infonce_hard"], train={"kl_top_k": 4, "negatives": 1,
                                                                        "negative_offset": 1})
    out = tmp_path / "index"
    nanovdr_index.build_index(cfg, out, seed=0, cache=EmbeddingCache(tmp_path / "emb"), progress=False)
    art = nanovdr_index.load_index(out)
    assert [q.qid for q in art.queries["train"]] == ["q0", "q1", "q2", "q3", "q4", "q6"]
    # 6 training pages; the fixture's two validation pages have the bytes of q0's and q1's: one page each
    assert len(art.pools["train"]) == 6 and art.page_emb["train"].shape[0] == 6
    from tests.unit.data.nanovdr_train_fixtures import png

    sizes = {r[0]: (20 + i, 30 + i, 10 * i) for i, r in enumerate(ROWS)} | {v[0]: (20 + i, 30 + i, 10 * i)
                                                                          for i, v in enumerate(VAL)}
    for split in ("train", "val"):
        pos = art.positives[split]
        assert (pos >= 0).all() and len(set(pos.tolist())) == len(pos)
        for q, p in zip(art.queries[split], pos):
            assert art.pools["train"][p].image.read_bytes() == png(*sizes[q.qid])     # its own page
    assert art.positives["val"].tolist() == art.positives["train"][:2].tolist()
    assert art.topk["train"].shape == (6, 4)
    curve = nanovdr_distill.distill(cfg, "infonce_hard", tmp_path / "s.safetensors", index_dir=out, progress=False,
                                    cache=None)
    assert math.isfinite(curve["train_loss"].iloc[0]) and curve["train_loss"].iloc[0] > 0
