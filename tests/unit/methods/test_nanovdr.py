"""NanoVDR wiring on tiny fake data with random:bert-tiny teacher and student."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lab.methods.nanovdr import distill as nanovdr_distill, evaluate as nanovdr_evaluate, index as nanovdr_index
from lab.records import Query
from lab.retrieval.dense import EmbeddingCache, Encoder
from lab.retrieval.teachers import TextTeacher
from lab.retrieval.distill import validate



def test_split_queries_has_no_test_query_and_adds_translations(tiny_index):
    cfg, _, _ = tiny_index
    split = nanovdr_index.split_queries(cfg, seed=0)
    eval_ids = {q.qid for q in split["eval"]}
    assert len(split["eval"]) == 5 and len(split["val"]) == 16
    assert not eval_ids & {q.qid for q in split["train"] + split["val"]}
    assert len(split["train"]) == 2 * (40 + 5)                            # English + <de> copies
    assert sum(q.text.startswith("<de> ") for q in split["train"]) == 45
    assert {q.qid for q in split["train"]} >= {str(20000 + i) for i in range(5)}   # DL20 queries train
    assert not {q.qid for q in split["train"]} & {q.qid for q in split["val"]}


def test_split_queries_refuses_a_leaked_test_query(tiny_index, tmp_path, monkeypatch):
    cfg, _, _ = tiny_index
    leaked = [Query("19000", "what is the lobster about 0")]
    monkeypatch.setattr(nanovdr_index, "_query_pool", lambda *a: leaked + [Query(str(i), f"q {i}") for i in range(60)])
    with pytest.raises(ValueError, match="test"):
        nanovdr_index.split_queries(cfg, seed=0)


def test_build_index_artifacts(tiny_index):
    cfg, index_dir, summary = tiny_index
    art = nanovdr_index.load_index(index_dir)
    assert art.dim == 64                                                  # bert-tiny hidden size, no projector
    assert summary["pages"]["eval"] == len(art.pools["eval"]) > 5
    assert all(p.image is not None and p.image.is_file() for p in art.pools["eval"])
    assert art.page_emb["eval"].shape == (len(art.pools["eval"]), 64)
    assert art.query_emb["train"].shape == (90, 64)
    k = summary["top_k"]
    assert art.topk["train"].shape == (90, k) and art.topk["train"].max() < len(art.pools["train"])
    assert np.all(np.diff(art.topk_scores["train"], axis=1) <= 1e-6)     # best first


def test_teacher_embeddings_are_reused_not_recomputed(tiny_index, tmp_path, monkeypatch):
    cfg, index_dir, _ = tiny_index
    cache = EmbeddingCache(index_dir.parent / "emb-cache")
    calls = []
    for name in ("encode_pages", "encode_queries"):
        orig = getattr(TextTeacher, name)
        monkeypatch.setattr(TextTeacher, name, lambda self, *a, _o=orig, _n=name, **k: calls.append(_n) or _o(self, *a, **k))
    summary = nanovdr_index.build_index(cfg, tmp_path / "again", seed=0, cache=cache, progress=False)
    assert calls == [] and cache.computed == {} and sum(cache.hits.values()) == 5   # 2 page pools + 3 query sets
    assert summary["fingerprint"] == nanovdr_index.load_index(index_dir).manifest["fingerprint"]


class Spy:
    """Records every text the student's tokenizer is asked to encode."""

    def __init__(self, encoder: Encoder):
        self.texts: list[str] = []
        orig = encoder.tokenize

        def tokenize(texts):
            self.texts.extend(texts)
            return orig(texts)

        encoder.tokenize = tokenize


@pytest.mark.parametrize("finetune", [True, False])
@pytest.mark.parametrize("objective", ["cosine", "infonce", "cosine_kl"])
def test_student_never_receives_document_text(tiny_index, make_cfg, tmp_path, objective, finetune):
    cfg, index_dir, _ = tiny_index
    cfg = make_cfg(data_dir=cfg.data_dir, index_dir=str(index_dir),
                      train={"epochs": 1, "finetune_backbone": finetune})
    art = nanovdr_index.load_index(index_dir)
    student = Encoder.from_ref(cfg.student, out_dim=art.dim, projector_hidden=cfg.projector_hidden, max_length=16)
    spy = Spy(student)
    nanovdr_distill.distill(cfg, objective, tmp_path / "s.safetensors", student=student, progress=False, cache=None)
    queries = {q.text for split in ("train", "val") for q in art.queries[split]}
    pages = {p.text for pool in art.pools.values() for p in pool}
    assert spy.texts and set(spy.texts) <= queries
    assert not set(spy.texts) & pages


def test_projector_output_matches_teacher_dim(tiny_index, make_cfg, tmp_path):
    cfg, index_dir, _ = tiny_index
    cfg = make_cfg(data_dir=cfg.data_dir, index_dir=str(index_dir), train={"epochs": 1})
    nanovdr_distill.distill(cfg, "cosine", tmp_path / "s.safetensors", progress=False)
    student = Encoder.load(tmp_path / "s.safetensors")
    assert student.projector.out_dim == nanovdr_index.load_index(index_dir).dim == student.encode(["x"], progress=False).shape[1]
    assert student.projector.hidden == cfg.projector_hidden


def test_cosine_training_reduces_validation_loss(tiny_index, make_cfg, tmp_path):
    cfg, index_dir, _ = tiny_index
    cfg = make_cfg(data_dir=cfg.data_dir, index_dir=str(index_dir), train={"epochs": 6, "lr": 2.0e-3})
    art = nanovdr_index.load_index(index_dir)
    data = nanovdr_distill.distill_data(art)
    obj = nanovdr_distill.objective_settings(cfg, "cosine")
    student = Encoder.from_ref(cfg.student, out_dim=art.dim, projector_hidden=cfg.projector_hidden, max_length=16)
    before = validate(student, student, data, obj)["val_loss"]
    curve = nanovdr_distill.distill(cfg, "cosine", tmp_path / "s.safetensors", student=student, progress=False,
                                    cache=None)
    assert curve.attrs["best_score"] < 0.7 * before
    assert curve["train_loss"].iloc[-1] < curve["train_loss"].iloc[0]
    assert list(curve["epoch"]) == [1, 2, 3, 4, 5, 6]
    best = curve.loc[curve["epoch"] == curve.attrs["best_epoch"], "val_loss"].item()
    assert best == curve["val_loss"].min() == pytest.approx(curve.attrs["best_score"])
    saved = Encoder.load(tmp_path / "s.safetensors")
    assert validate(saved, saved, data, obj)["val_loss"] == pytest.approx(best, rel=1e-5)   # best epoch kept


@pytest.mark.parametrize("finetune", [True, False])
def test_resume_from_checkpoint_gives_the_uninterrupted_result(tiny_index, make_cfg, tmp_path, finetune):
    cfg, index_dir, _ = tiny_index
    cfg = make_cfg(data_dir=cfg.data_dir, index_dir=str(index_dir), train={"epochs": 3, "finetune_backbone": finetune})
    n = len(nanovdr_index.load_index(index_dir).queries["train"])
    per_epoch = -(-n // cfg.train.batch_size)
    part = nanovdr_distill.distill(cfg, "cosine_kl", tmp_path / "a.safetensors", seed=1, progress=False,
                                   stop_after=2 * per_epoch)                        # interrupted after 2 epochs
    assert not (tmp_path / "a.safetensors").exists() and list(part["epoch"]) == [1, 2]
    resumed = nanovdr_distill.distill(cfg, "cosine_kl", tmp_path / "a.safetensors", seed=1, progress=False)
    assert resumed.attrs["resumed_from"] == 2 and list(resumed["epoch"]) == [1, 2, 3]
    fresh = nanovdr_distill.distill(cfg, "cosine_kl", tmp_path / "b.safetensors", seed=1, resume=False, progress=False)
    assert fresh.attrs["resumed_from"] == 0
    a, b = load_file(str(tmp_path / "a.safetensors")), load_file(str(tmp_path / "b.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed[["train_loss", "val_loss"]].equals(fresh[["train_loss", "val_loss"]])


def test_all_objectives_train_and_evaluate_deterministically(tiny_index, tmp_path):
    cfg, index_dir, _ = tiny_index
    students = {}
    for objective in cfg.objectives:
        curve = nanovdr_distill.distill(cfg, objective, tmp_path / f"{objective}.safetensors", seed=0, progress=False)
        assert len(curve) == cfg.train.epochs and np.isfinite(curve["val_loss"]).all()
        students[f"student-{objective}"] = tmp_path / f"{objective}.safetensors"
    report = nanovdr_evaluate.evaluate(cfg, students)
    assert set(report.runs) == {"teacher", "bm25", "student-untrained", *students}
    assert set(report.retention["run"]) == set(report.runs)                  # the untrained row in the table
    r = report.retention.set_index(["run", "measure"])
    assert r.loc[("teacher", "ndcg_10"), "retention"] == pytest.approx(1.0)
    assert set(report.comparison.summary["measure"]) == {"ndcg_10", "ndcg_5"}
    again = nanovdr_evaluate.evaluate(cfg, students)
    pd_equal = report.comparison.summary.equals(again.comparison.summary)
    assert pd_equal
    # retraining with the same seed gives the same student, hence the same metrics
    nanovdr_distill.distill(cfg, "cosine", tmp_path / "cosine2.safetensors", seed=0, progress=False)
    a, b = load_file(str(tmp_path / "cosine.safetensors")), load_file(str(tmp_path / "cosine2.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_untrained_student_is_distills_seeded_starting_point(tiny_index, make_cfg, tmp_path, monkeypatch):
    """``student-untrained``: the student ``distill`` builds for the same seed (backbone + seeded projector into
    the teacher's width), never trained, searched over the same pool as every student."""
    cfg, index_dir, _ = tiny_index
    art = nanovdr_index.load_index(index_dir)
    queries = art.queries["eval"]
    report = nanovdr_evaluate.evaluate(cfg, {}, seed=3)
    assert set(report.runs) == {"teacher", "bm25", "student-untrained"}
    start = Encoder.from_ref(cfg.student, out_dim=art.dim, projector_hidden=cfg.projector_hidden,
                             max_length=cfg.student_max_length, seed=3)
    assert nanovdr_distill.build_student(cfg, art.dim, 3).settings() == start.settings()
    from lab.retrieval.index import DenseIndex

    index = DenseIndex([p.docid for p in art.pools["eval"]], art.page_emb["eval"])
    expected = index.search(start.encode([q.text for q in queries], progress=False), cfg.search_depth,
                            queries=queries, name="student-untrained")
    got = report.runs["student-untrained"]
    for q in queries:
        assert [c.docid for c in got[q.qid].candidates] == [c.docid for c in expected[q.qid].candidates]
        assert [c.score for c in got[q.qid].candidates] == pytest.approx([c.score for c in expected[q.qid].candidates])
    other = nanovdr_evaluate.evaluate(cfg, {}, seed=4).runs["student-untrained"]   # the seed draws the projector
    assert any([c.score for c in other[q.qid].candidates] != [c.score for c in got[q.qid].candidates] for q in queries)
    assert "student-untrained" not in nanovdr_evaluate.evaluate(cfg, {}, untrained=False).runs
    built, orig = [], nanovdr_distill.build_student                     # distill starts from that same student
    monkeypatch.setattr(nanovdr_distill, "build_student", lambda *a: built.append(a[1:]) or orig(*a))
    short = make_cfg(data_dir=cfg.data_dir, index_dir=str(index_dir), train={"epochs": 1})
    nanovdr_distill.distill(short, "cosine", tmp_path / "s.safetensors", seed=3, progress=False, cache=None)
    assert built == [(art.dim, 3)]
    with pytest.raises(ValueError, match="untrained"):
        nanovdr_evaluate.evaluate(cfg, {"student-untrained": "x.safetensors"})
