import os

import pytest

from lab import paths


def test_repo_root_from_cwd_and_dvc_root(repo_copy, monkeypatch, tmp_path):
    sub = repo_copy / "a" / "b"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    assert paths.repo_root() == repo_copy.resolve()
    # DVC_ROOT names the original checkout even inside a `dvc exp run --temp` workspace: cwd wins
    monkeypatch.setenv("DVC_ROOT", "/somewhere/else")
    assert paths.repo_root() == repo_copy.resolve()
    monkeypatch.chdir(tmp_path.parent)
    assert str(paths.repo_root()) == "/somewhere/else"


def test_repo_root_missing(tmp_path, monkeypatch):
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="params.yaml"):
        paths.repo_root()


def test_atomic_write_leaves_old_file_on_crash(tmp_path):
    target = tmp_path / "out" / "m.json"
    paths.write_json(target, {"b": 1, "a": 2})
    assert target.read_text() == '{\n  "a": 2,\n  "b": 1\n}\n'  # sorted keys
    with pytest.raises(RuntimeError):
        with paths.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text().startswith("{")
    assert os.listdir(target.parent) == ["m.json"]  # no temp file left
    assert oct(target.stat().st_mode & 0o777) != oct(0o600)


def test_atomic_dir(tmp_path):
    target = tmp_path / "d"
    with paths.atomic_path(target, is_dir=True) as tmp:
        (tmp / "x").write_text("1")
    with pytest.raises(ValueError):
        with paths.atomic_path(target, is_dir=True) as tmp:
            (tmp / "x").write_text("2")
            raise ValueError
    assert (target / "x").read_text() == "1"
    assert sorted(os.listdir(tmp_path)) == ["d"]
