import pytest
import torch
from torch import nn

from distill import ConfigError, DistillError
from distill.models import build_model, count_params
from distill.weights import load_weights, save_weights


@pytest.mark.parametrize(
    ("name", "shape"), [("mlp", (1, 8, 8)), ("mlp", (13,)), ("cnn", (1, 8, 8)), ("cnn", (3, 32, 32))]
)
def test_builtin_models_map_inputs_to_class_logits(name, shape):
    model = build_model(name, input_shape=shape, num_classes=7)
    assert model(torch.randn(5, *shape)).shape == (5, 7)


def test_sizes_follow_the_args():
    small = build_model("mlp", input_shape=(64,), num_classes=10, args={"hidden": [32]})
    assert count_params(small) == 64 * 32 + 32 + 32 * 10 + 10
    wide = build_model("cnn", input_shape=(1, 8, 8), num_classes=10, args={"channels": [64, 128]})
    assert count_params(wide) > count_params(build_model("cnn", input_shape=(1, 8, 8), num_classes=10))


def test_builtin_models_name_their_tap_paths():
    cnn = build_model("cnn", input_shape=(1, 28, 28), num_classes=10, args={"channels": [8, 16, 32]})
    mlp = build_model("mlp", input_shape=(64,), num_classes=10, args={"hidden": [32, 16]})
    assert [name for name, _ in cnn.named_children()] == ["block1", "block2", "block3", "pool", "hidden", "fc"]
    assert [name for name, _ in mlp.named_children()] == ["flatten", "hidden1", "hidden2", "fc"]
    x = torch.randn(2, 1, 28, 28)
    assert cnn.block3(cnn.block2(cnn.block1(x))).shape == (2, 32, 3, 3)  # pooled while larger than 4x4


def test_cnn_refuses_flat_inputs():
    with pytest.raises(ConfigError, match=r"needs image inputs \(C, H, W\)"):
        build_model("cnn", input_shape=(13,), num_classes=2, field="teacher")


def test_a_users_factory_with_keyword_arguments(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(
        "from torch import nn\n"
        "def make(num_classes, width=4, input_shape=None):\n"
        "    return nn.Sequential(nn.Flatten(), nn.LazyLinear(width), nn.ReLU(), nn.Linear(width, num_classes))\n"
        "def not_a_model(num_classes):\n"
        "    return 42\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    model = build_model("my_models:make", input_shape=(6,), num_classes=3, args={"width": 9})
    assert model(torch.randn(2, 6)).shape == (2, 3)
    assert model[1].out_features == 9
    with pytest.raises(ConfigError, match="student.args: 'my_models:make' takes no argument 'depth'"):
        build_model("my_models:make", input_shape=(6,), num_classes=3, args={"depth": 2}, field="student")
    with pytest.raises(ConfigError, match="returned int, not a torch.nn.Module"):
        build_model("my_models:not_a_model", input_shape=(6,), num_classes=3)
    with pytest.raises(ConfigError, match="has no attribute 'missing'"):
        build_model("my_models:missing", input_shape=(6,), num_classes=3)


def test_weights_round_trip_including_tied_tensors(tmp_path):
    model = nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 5, bias=False))
    model[1].weight = model[0].weight  # tied, as in language models
    save_weights(model, tmp_path / "w.safetensors")
    fresh = nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 5, bias=False))
    fresh[1].weight = fresh[0].weight
    load_weights(fresh, tmp_path / "w.safetensors")
    assert torch.equal(fresh[0].weight, model[0].weight)


def test_truncated_and_foreign_weight_files(tmp_path):
    model = build_model("mlp", input_shape=(4,), num_classes=2)
    save_weights(model, tmp_path / "w.safetensors")
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(DistillError, match="cut.safetensors is not a readable safetensors file"):
        load_weights(model, tmp_path / "cut.safetensors")
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    with pytest.raises(DistillError, match="notes.pt cannot be loaded safely"):
        load_weights(model, tmp_path / "notes.pt")
    torch.save({"epoch": 3}, tmp_path / "state.pt")
    with pytest.raises(DistillError, match="holds no state dict of tensors"):
        load_weights(model, tmp_path / "state.pt")
