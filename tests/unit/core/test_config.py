import dataclasses

import pytest
import yaml

from lab import config
from lab.config import ConfigError, PROFILES

from tests.conftest import REPO


@pytest.mark.parametrize("profile", PROFILES)
def test_every_section_of_every_profile_loads(profile):
    sections = config.load_all(profile, REPO / "params.yaml")
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    assert set(sections) == set(raw) - {"profile", "seed"}
    for name, cfg in sections.items():
        assert dataclasses.is_dataclass(cfg)
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(cfg, dataclasses.fields(cfg)[0].name, None)


def test_profile_overrides_merge():
    smoke = config.load("data", "smoke", REPO / "params.yaml")
    tiny = config.load("data", "tiny", REPO / "params.yaml")
    assert smoke.depth == 100 and tiny.depth == 20
    assert tiny.datasets == smoke.datasets  # not overridden -> inherited


def write(tmp_path, text):
    p = tmp_path / "params.yaml"
    p.write_text(text)
    return p


BASE = "profile: smoke\nseed: 1\ntracking: {experiment: x, artifacts_dir: a}\n"


def test_unknown_key_names_key_and_file(tmp_path):
    p = write(tmp_path, BASE + "data: {datasets: [trec-dl-2019], dept: 3}\n")
    with pytest.raises(ConfigError, match=r"params\.yaml: data: unknown key 'dept' \(did you mean 'depth'\?\)"):
        config.load("data", path=p)


def test_wrong_type_names_key(tmp_path):
    p = write(tmp_path, BASE + "data: {depth: '20'}\n")
    with pytest.raises(ConfigError, match=r"params\.yaml: data\.depth: expected an int, got str"):
        config.load("data", path=p)


@dataclasses.dataclass(frozen=True)
class _BoolTest:
    flag: bool = False


def test_string_boolean_rejected():
    # DVC templating turns booleans into strings; we never accept "true" for a bool.
    with pytest.raises(ConfigError, match=r"params\.yaml: _booltest\.flag: expected a bool"):
        config.build(_BoolTest, {"flag": "true"}, "params.yaml: _booltest")
    assert config.build(_BoolTest, {"flag": True}, "params.yaml: _booltest").flag is True


def test_schemas_core_and_one_per_method_package(tmp_path):
    from lab.methods.first import config as first_config
    from lab.methods.nanovdr import config as nanovdr_config
    from lab.sections import CORE

    known = config.schemas()
    assert {"tracking", "data", "models", "firststage", "first", "nanovdr"} <= set(known)
    assert {k: known[k] for k in CORE} == CORE
    assert config.schema("first") is first_config.SCHEMA is known["first"]
    assert config.schema("nanovdr") is nanovdr_config.SCHEMA
    assert config.schema("nope") is None and config.schema("no.such") is None and config.schema("../x") is None
    p = write(tmp_path, BASE + "nope: {}\n")
    with pytest.raises(ConfigError, match=r"no schema for section 'nope'; known: \[.*'first'.*'nanovdr'"):
        config.load("nope", path=p)


def test_list_item_type_checked(tmp_path):
    p = write(tmp_path, BASE + "data: {datasets: [trec-dl-2019, 7]}\n")
    with pytest.raises(ConfigError, match=r"data\.datasets\[1\]: expected a string"):
        config.load("data", path=p)


def test_missing_section_and_unknown_profile(tmp_path):
    p = write(tmp_path, BASE)
    with pytest.raises(ConfigError, match="missing section 'data'"):
        config.load("data", path=p)
    p = write(tmp_path, BASE + "data: {profiles: {tinyy: {depth: 1}}}\n")
    with pytest.raises(ConfigError, match="data.profiles: unknown profile 'tinyy'"):
        config.load("data", path=p)
    p = write(tmp_path, "profile: gpu\n" + BASE.split("\n", 1)[1] + "data: {}\n")
    with pytest.raises(ConfigError, match="profile: expected one of"):
        config.load("data", path=p)


def test_unknown_key_inside_profile_override(tmp_path):
    p = write(tmp_path, BASE + "data: {depth: 5, profiles: {tiny: {deep: 1}}}\n")
    config.load("data", "smoke", p)  # smoke does not apply the tiny block
    with pytest.raises(ConfigError, match="data: unknown key 'deep'"):
        config.load("data", "tiny", p)


def test_unknown_top_level_key(tmp_path):
    p = write(tmp_path, BASE + "dataa: {}\n")
    with pytest.raises(ConfigError, match="unknown top-level key 'dataa'"):
        config.load_all(path=p)


def test_float_accepts_int_and_explains_yaml_exponent(tmp_path):
    p = write(tmp_path, BASE + "firststage: {alpha: 1}\n")
    assert config.load("firststage", path=p).alpha == 1.0
    p = write(tmp_path, BASE + "firststage: {alpha: 1e-4}\n")  # YAML 1.1 reads this as a string
    with pytest.raises(ConfigError, match="1.0e-4"):
        config.load("firststage", path=p)


def test_flat_dict_for_mlflow():
    cfg = config.load("firststage", "smoke", REPO / "params.yaml")
    flat = config.as_flat_dict(cfg)
    assert flat["measures.ndcg_10"] == "nDCG@10"
    assert flat["baseline"] == "bm25"
