"""Claims from measurements: the verdict logic of lab.expected (reproduced / not reproduced with p / not run /
--strict), on fixture outputs, and the repo's expected.yaml files against the schema."""

import json

import pytest

from lab import expected
from lab.config import ConfigError
from tests.conftest import REPO


@pytest.mark.parametrize("path", expected.all_files(REPO), ids=lambda p: p.parent.name)
def test_every_expected_yaml_is_valid(path):
    exp = expected.load(path)
    assert exp.claims and exp.tables, "claims and at least the paper's central table"
    text = path.read_text()
    assert "\n    ours:" not in text, "no hand-typed ours: the value is read from the outputs"
    for c in exp.claims:
        assert c.command, f"{c.id}: every number needs the command that produced it"
        assert c.metric.partition(":")[0].startswith("outputs/"), f"{c.id}: measured from the pipeline's outputs"
        if c.test is not None:
            assert c.test.alpha == 0.05 and c.test.p.partition(":")[0].startswith("outputs/"), c.id
    for f in exp.figures:
        assert f.startswith("outputs/") and f.endswith(".png"), f


def test_claims_of_differences_carry_a_paired_test():
    """The FIRST noise-level claims (issue 9) must be judged by the pipeline's p-value, not by a tolerance."""
    first = {c.id: c for c in expected.load(REPO / "experiments" / "first" / "expected.yaml").claims}
    for cid in ("smoke-joint-ge-lm-only", "smoke-trained-single-above-zeroshot", "smoke-trained-single-above-bm25"):
        assert first[cid].test is not None and first[cid].compare == "above", cid
        assert first[cid].target in (None, 0.0), cid


def write(root, rel, data):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def notebook(root, stage, profile):
    write(root, f"outputs/{stage}/notebook.ipynb", {"metadata": {"papermill": {"parameters": {"profile": profile}}}})


def claim(cid="c", **kw):
    kw.setdefault("metric", "outputs/s/metrics.json:a.x")
    kw.setdefault("compare", "above")
    return expected.Claim(id=cid, description="d", command="dvc repro s", **kw)


def verdicts(root, *claims, profile="smoke"):
    return expected.evaluate({c.id: c for c in claims}, expected.Outputs(root), profile)


@pytest.fixture
def outs(tmp_path):
    write(tmp_path, "outputs/s/metrics.json", {"a": {"x": 0.51, "y": 0.50, "diff": 0.0051, "diff_p": 0.46,
                                                     "big": 0.2, "big_p": 0.001}})
    notebook(tmp_path, "s", "smoke")
    return tmp_path


def test_approx_reproduced_and_not(outs):
    s = verdicts(outs, claim("a", compare="approx", paper=0.5, tolerance=0.02),
                 claim("b", compare="approx", paper=0.5, tolerance=0.005))
    assert s["a"].verdict == expected.REPRODUCED and s["a"].ours == 0.51 and s["a"].reference == 0.5
    assert s["b"].verdict == expected.NOT_REPRODUCED and "> 0.0050" in s["b"].reason


def test_above_and_below_a_target_or_another_claim(outs):
    s = verdicts(outs, claim("x", target=0.5), claim("y", metric="outputs/s/metrics.json:a.y", target=0.1),
                 claim("x-above-y", than="y"), claim("y-below-x", metric="outputs/s/metrics.json:a.y",
                                                     compare="below", than="outputs/s/metrics.json:a.x"),
                 claim("x-below-y", compare="below", than="y"))
    assert [s[k].verdict for k in ("x", "y", "x-above-y", "y-below-x")] == [expected.REPRODUCED] * 4
    assert s["x-above-y"].reference == 0.50 and s["x-above-y"].reference_label == "y"
    assert s["x-below-y"].verdict == expected.NOT_REPRODUCED and "not below" in s["x-below-y"].reason


def test_a_difference_within_noise_is_not_reproduced_with_its_p(outs):
    """FIRST's joint - LM-only: +0.0051 at p = 0.46 passed the old target of -1e-6; now it must pass the test."""
    test = expected.PairedTest(p="outputs/s/metrics.json:a.diff_p", alpha=0.05)
    s = verdicts(outs, claim("noise", metric="outputs/s/metrics.json:a.diff", target=0.0, test=test),
                 claim("real", metric="outputs/s/metrics.json:a.big", target=0.0,
                       test=expected.PairedTest(p="outputs/s/metrics.json:a.big_p")),
                 claim("wrong-sign", metric="outputs/s/metrics.json:a.big", compare="below", target=0.0,
                       test=expected.PairedTest(p="outputs/s/metrics.json:a.big_p")))
    assert s["noise"].verdict == expected.NOT_REPRODUCED and s["noise"].p == 0.46
    assert "within noise, p = 0.46" in s["noise"].reason
    assert s["real"].verdict == expected.REPRODUCED and s["real"].p == 0.001
    assert s["wrong-sign"].verdict == expected.NOT_REPRODUCED    # significant, but the other way


def test_not_run_when_outputs_or_profile_are_absent(outs):
    s = verdicts(outs, claim("no-file", metric="outputs/none/metrics.json:a.x", target=0.0),
                 claim("no-key", metric="outputs/s/metrics.json:a.zz", target=0.0),
                 claim("no-p", target=0.0, test=expected.PairedTest(p="outputs/s/metrics.json:a.zz_p")),
                 claim("no-ref", than="no-file"),
                 claim("paper", profile="paper", compare="approx", paper=0.5, tolerance=1.0))
    assert {k: v.verdict for k, v in s.items()} == dict.fromkeys(s, expected.NOT_RUN)
    assert "absent" in s["no-file"].reason and "a.zz absent" in s["no-key"].reason and "p-value" in s["no-p"].reason
    assert "paper-profile claim; outputs: smoke" in s["paper"].reason


def test_outputs_of_another_profile_are_not_read(outs):
    """A tiny-profile workspace says nothing about a smoke number, whatever params.yaml says; and the reverse."""
    notebook(outs, "s", "tiny")
    smoke, tiny = claim("smoke", target=0.0), claim("tiny", profile="tiny", target=0.0)
    s = verdicts(outs, smoke, tiny, profile="smoke")
    assert s["smoke"].verdict == expected.NOT_RUN and s["tiny"].verdict == expected.REPRODUCED
    (outs / "outputs" / "s" / "notebook.ipynb").unlink()        # no notebook: the workspace profile decides
    assert verdicts(outs, smoke, profile="smoke")["smoke"].verdict == expected.REPRODUCED
    assert verdicts(outs, smoke, profile="tiny")["smoke"].verdict == expected.NOT_RUN
    write(outs, "outputs/bench/b.json", {"profile": "tiny", "ms": 3.0})     # a bench JSON says its own profile
    assert verdicts(outs, claim("b", metric="outputs/bench/b.json:ms", target=1.0))["b"].verdict == expected.NOT_RUN


def test_schema_rejects_what_cannot_be_measured(tmp_path):
    def load(body):
        p = tmp_path / "expected.yaml"
        p.write_text("paper: x\nsource: y\nclaims:\n" + body)
        return expected.load(p)

    with pytest.raises(ConfigError, match="unknown key 'ours'"):
        load("  - {id: a, description: d, metric: 'o.json:k', command: c, compare: above, target: 0, ours: 1.0}\n")
    with pytest.raises(ConfigError, match="every claim is measured"):
        load("  - {id: a, description: d, metric: '', command: c, compare: above, target: 0}\n")
    with pytest.raises(ConfigError, match="needs a reference"):
        load("  - {id: a, description: d, metric: 'o.json:k', command: c, compare: above}\n")
    with pytest.raises(ConfigError, match="neither a claim id"):
        load("  - {id: a, description: d, metric: 'o.json:k', command: c, compare: above, than: b}\n")
    with pytest.raises(ConfigError, match="not approx"):
        load("  - {id: a, description: d, metric: 'o.json:k', command: c, compare: approx, paper: 1,"
             " test: {p: 'o.json:p'}}\n")
    with pytest.raises(ConfigError, match="expected one of"):
        load("  - {id: a, description: d, metric: 'o.json:k', command: c, compare: '>=', target: 0}\n")


def cli(root, monkeypatch, capsys, *args):
    monkeypatch.chdir(root)
    rc = expected.main(list(args))
    return rc, capsys.readouterr()


def test_cli_strict_fails_on_a_clean_checkout_and_passes_when_all_reproduce(tmp_path, monkeypatch, capsys):
    (tmp_path / "params.yaml").write_text("profile: smoke\nseed: 0\n")
    (tmp_path / "experiments" / "p").mkdir(parents=True)
    (tmp_path / "experiments" / "p" / "expected.yaml").write_text(
        "paper: P\nsource: S\nclaims:\n"
        "  - {id: m, description: d, metric: 'outputs/s/metrics.json:a.x', command: dvc repro s, compare: approx,"
        " paper: 0.5, tolerance: 0.02}\n"
        "  - {id: q, description: d, metric: 'outputs/s/metrics.json:a.x', command: c, compare: approx, paper: 9,"
        " profile: paper}\n"
        "tables:\n  - {id: t, title: T, command: c, rows: {r: x}, columns: {ours: 'outputs/s/metrics.json:a.{row}'}}\n")
    rc, out = cli(tmp_path, monkeypatch, capsys)
    assert rc == 0 and out.out.count("-> not run") == 2 and "0 reproduced, 0 not reproduced, 2 not run" in out.out
    rc, out = cli(tmp_path, monkeypatch, capsys, "--strict")
    assert rc == 1 and "m (not run)" in out.err and "q (" not in out.err   # only the active profile's claims
    write(tmp_path, "outputs/s/metrics.json", {"a": {"x": 0.51}})
    rc, out = cli(tmp_path, monkeypatch, capsys, "--strict")
    assert rc == 0 and "reproduced: |ours - paper| = 0.0100 <= 0.0200" in out.out and "$ dvc repro s" in out.out
    write(tmp_path, "outputs/s/metrics.json", {"a": {"x": 0.6}})
    rc, out = cli(tmp_path, monkeypatch, capsys, "--strict")
    assert rc == 1 and "m (not reproduced)" in out.err
