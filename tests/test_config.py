from pathlib import Path

import pytest

from conftest import write_config
from distill import ConfigError, DistillError
from distill.config import Config, load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))
DEMO = Path(__file__).resolve().parents[1] / "src" / "distill" / "demos" / "classify.yaml"


@pytest.mark.parametrize("path", [*CONFIGS, DEMO], ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    assert path.read_text().startswith("# distill ")  # each says how to run it
    assert isinstance(load_config(path), Config)


def test_overrides_are_typed_and_nested(tiny_config):
    cfg = load_config(
        tiny_config,
        [
            "train.epochs=7",
            "method.terms.0.temperature=2.5",
            "train.milestones=[2, 4]",
            "train.schedule=multistep",
            "scratch=false",
        ],
    )
    assert (
        cfg.train.epochs == 7 and cfg.method.terms[0].options["temperature"] == 2.5 and cfg.train.milestones == [2, 4]
    )
    assert cfg.scratch is False


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epocs=3", "train.epocs: unknown key (did you mean 'epochs'?)"),
        ("trian.epochs=3", "trian: unknown key (did you mean 'train'?)"),
        ("train.epochs=ten", "train.epochs: Input should be a valid integer"),
        ("train.epochs=0", "train.epochs: Input should be greater than or equal to 1"),
        ("train.epochs=1000000000000", "train.epochs: Input should be less than or equal to 100000"),
        ("data.batch_size=0", "data.batch_size: Input should be greater than or equal to 1"),
        ("train.schedule=multistep", "schedule 'multistep' needs train.milestones"),
        ("name=../escape", "name: String should match pattern"),
        ("train.epochs", "expected key=value"),
        ("method.stages=[]", "method.stages: List should have at least 1 item"),
        ("method.terms.1.weight=2", "method.terms is not a list in this config"),
        ("method.stages.0.epochs=2", "method.stages is not a list in this config; set the whole list"),
        ("method.terms=[]", "method.terms: List should have at least 1 item"),
        (
            "method.stages=[{name: hint, epochs: 1, terms: []}]",
            "method.stages.0.terms: List should have at least 1 item",
        ),
        (
            "method.stages=[{name: a, epochs: 1, terms: [{loss: kd}], train: {lrr: 1}}]",
            "method.stages.0.train.lrr: unknown key (did you mean 'lr'?)",
        ),
        (
            "method.stages=[{name: a, epochs: 1, terms: [{loss: kd}]}, {name: a, epochs: 1, terms: [{loss: kd}]}]",
            "names must differ",
        ),
        ("train.epochs=true", "train.epochs: Input should be a valid integer"),
        ("teacher.cache=c", "teacher.cache needs teacher.weights"),
        ("train.milestones=[1]", "teacher.epochs=1 must exceed every entry of train.milestones [1]"),
    ],
)
def test_bad_values_name_the_key(tiny_config, override, message):
    with pytest.raises(ConfigError) as e:
        load_config(tiny_config, ["teacher.epochs=1", "method={kind: offline}", override])
    assert message in str(e.value)
    assert str(tiny_config) in str(e.value) or "--set" in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\nteacher: {model: cnn\n", "invalid YAML at line"),
        ("- just\n- a list\n", "a config is a mapping"),
        ("", "a config is a mapping"),
        ("name: x\nstudent: {model: mlp}\n", "teacher: missing"),
        ("name: x\nteacher: {model: cnn}\nstudent: {model: mlp}\nname: y\n", "key 'name' appears twice"),
    ],
)
def test_bad_files_name_the_problem(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write_config(tmp_path / "bad.yaml", text))


def test_a_missing_config_file(tmp_path):
    with pytest.raises(DistillError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_yaml_never_runs_code(tmp_path):
    text = "name: !!python/object/apply:os.system ['echo hacked']\nteacher: {model: cnn}\nstudent: {model: mlp}\n"
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(write_config(tmp_path / "evil.yaml", text))


def test_set_into_a_list_checks_the_index(tiny_config):
    cfg = load_config(tiny_config, ["method.terms.0.weight=3"])
    assert cfg.method.terms[0].weight == 3
    with pytest.raises(ConfigError, match="method.terms has 1 entries; give an index below 1"):
        load_config(tiny_config, ["method.terms.1.weight=2"])
