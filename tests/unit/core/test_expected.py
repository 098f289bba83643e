import json

import pytest

from lab import expected
from lab.config import ConfigError
from tests.conftest import REPO


@pytest.mark.parametrize("path", expected.all_files(REPO), ids=lambda p: p.parent.name)
def test_every_expected_yaml_is_valid(path):
    exp = expected.load(path)
    assert exp.claims
    for c in exp.claims:
        assert c.command, f"{c.id}: every number needs the command that produced it"
        if c.ours is not None and c.paper is not None and c.tolerance == 0:
            assert c.ours == c.paper or c.note, f"{c.id}: a miss must be explained in note"


def test_status_reads_metrics(tmp_path):
    (tmp_path / "m.json").write_text(json.dumps({"a": {"b": 0.51}}))
    c = expected.Claim(id="x", description="d", metric="m.json:a.b", command="make repro", paper=0.5, ours=0.51,
                       tolerance=0.005)
    s = expected.status(c, tmp_path)
    assert s["measured"] == 0.51 and s["recorded"] is True and s["reproduced"] is False
    c2 = expected.Claim(id="y", description="d", metric="m.json:a.zz", command="c", ours=0.4, target=0.3)
    s2 = expected.status(c2, tmp_path)
    assert s2["measured"] is None and s2["recorded"] is None and s2["reproduced"] is True


def test_bad_expected_yaml(tmp_path):
    p = tmp_path / "expected.yaml"
    p.write_text("paper: x\nsource: y\nclaims:\n  - {id: a, description: d, metric: '', command: c, paperr: 1}\n")
    with pytest.raises(ConfigError, match="unknown key 'paperr'"):
        expected.load(p)


def test_claims_of_another_profile_are_not_measured(tmp_path):
    """A tiny-profile workspace (the README's `python -m lab.expected` after `dvc exp run -S profile=tiny`) says
    nothing about smoke numbers: listed, not compared, so the command does not fail there."""
    (tmp_path / "m.json").write_text(json.dumps({"a": 0.1}))
    c = expected.Claim(id="x", description="d", metric="m.json:a", command="make repro", ours=0.5)
    assert expected.status(c, tmp_path)["recorded"] is False
    assert expected.status(c, tmp_path, "smoke")["recorded"] is False
    s = expected.status(c, tmp_path, "tiny")
    assert s["measured"] is None and s["recorded"] is None
