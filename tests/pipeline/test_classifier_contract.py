"""The classifier contract: loading TorchScript / entry points, the probe checks, class picking."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from pipeline.classifier.contract import ClassifierError, load_classifier, resolve_spec
from pipeline.classifier.model import TileCNN
from pipeline.config import ClassifierConfig


class RedScore(nn.Module):
    """Binary logit = 10 · (mean red − 0.5): a model whose answer we know."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 10.0 * (x[:, 0].mean(dim=(1, 2)) - 0.5)


class ThreeClass(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))  # [N, 3]: one logit per channel


class Squeezes(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3), keepdim=True).squeeze()  # [] for N=1


class Image(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Nan(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3)) * float("nan")


class Fixed32(nn.Module):
    """Only takes 32 px inputs (a flattening linear layer)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 32 * 32, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))[:, 0]


def script(model: nn.Module, path: Path) -> Path:
    torch.jit.save(torch.jit.script(model), str(path))
    return path


def load(path: Path, tile_size: int = 32, **kw):
    spec = resolve_spec(ClassifierConfig(model=str(path), **kw), path.parent, tile_size)
    return load_classifier(spec)


def test_torchscript_model_with_card(tmp_path: Path) -> None:
    path = script(RedScore(), tmp_path / "red.pt")
    (tmp_path / "red.json").write_text(json.dumps({"input_size": 16, "class_names": ["a", "b"]}))
    clf = load(path)
    assert clf.is_script and clf.input_size == 16 and clf.n_outputs == 1
    assert clf.class_names == ("a", "b") and clf.explained_class == "b"
    x = torch.zeros(2, 3, 64, 64)
    x[0, 0] = 1.0  # red tile
    logits = clf(x)  # resized 64 → 16 on the way in
    assert logits.shape == (2,)
    torch.testing.assert_close(clf.prob(logits), torch.sigmoid(torch.tensor([5.0, -5.0])))
    # Explaining class 0 of a binary model flips the sign; config overrides the card.
    clf0 = load(path, explain="a", input_size=24)
    assert clf0.input_size == 24
    torch.testing.assert_close(clf0.prob(clf0(x)), torch.sigmoid(torch.tensor([-5.0, 5.0])))
    torch.testing.assert_close(clf0.score(clf0(x)), torch.tensor([-5.0, 5.0]))
    # Normalisation is applied before the model: mean 0.5, std 0.5 maps red 1 → 1, 0 → -1.
    norm = load(path, mean=[0.5] * 3, std=[0.5] * 3)
    torch.testing.assert_close(norm(x), torch.tensor([5.0, -15.0]))


def test_multiclass_and_explain_by_name(tmp_path: Path) -> None:
    path = script(ThreeClass(), tmp_path / "three.pt")
    with pytest.raises(ClassifierError, match="3 classes; set classifier.explain"):
        load(path)
    clf = load(path, class_names=["r", "g", "b"], explain="g")
    x = torch.zeros(1, 3, 32, 32)
    x[:, 1] = 1.0
    assert clf.n_outputs == 3 and clf.explain_index == 1
    torch.testing.assert_close(clf.prob(clf(x)), torch.softmax(torch.tensor([0.0, 1, 0]), 0)[1:2])
    with pytest.raises(ClassifierError, match=r"class 'x' not in \['r', 'g', 'b'\]"):
        load(path, class_names=["r", "g", "b"], explain="x")
    with pytest.raises(ClassifierError, match="2 class names"):
        load(path, class_names=["r", "g"], explain=0)
    with pytest.raises(ClassifierError, match="explain=3 but 3 classes"):
        load(path, explain=3)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (None, "classifier file not found"),
        (lambda p: p.write_text("not a model\n"), "not a TorchScript model"),
        (lambda p: torch.save(TileCNN().state_dict(), p), "not a TorchScript model"),
        (lambda p: script(Image(), p), r"output torch.float32 \[2, 3, 64, 64\]"),
        (lambda p: script(Squeezes(), p), r"output torch.float32 \[\] for input \[1, 3"),
        (lambda p: script(Nan(), p), "non-finite outputs"),
        (lambda p: script(Fixed32(), p), r"fails on input \[2, 3, 64, 64\]"),
    ],
    ids=["missing", "text", "pickle", "image-out", "squeeze", "nan", "input-size"],
)
def test_bad_models_are_named(tmp_path: Path, make, message: str) -> None:
    path = tmp_path / "model.pt"
    if make is not None:
        make(path)
    with pytest.raises(ClassifierError, match=message) as info:
        load(path, tile_size=64)
    assert str(path) in str(info.value)


def test_entry_point_with_safetensors(tmp_path: Path) -> None:
    model = TileCNN((4, 8), 1)
    save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    cfg = ClassifierConfig(
        entry_point="pipeline.classifier.model:tile_cnn",
        weights=str(tmp_path / "w.safetensors"),
        entry_kwargs={"channels": [4, 8]},
    )
    clf = load_classifier(resolve_spec(cfg, tmp_path, 32))
    assert not clf.is_script and clf.class_names == ("0", "1")
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(clf(x), model.eval()(x), rtol=0, atol=0)

    def bad(**kw) -> None:
        load_classifier(resolve_spec(cfg.model_copy(update=kw), tmp_path, 32))

    with pytest.raises(ClassifierError, match="weights do not fit"):
        bad(entry_kwargs={"channels": [4, 16]})
    with pytest.raises(ClassifierError, match="cannot import"):
        bad(entry_point="pipeline.classifier.nowhere:f")
    with pytest.raises(ClassifierError, match="not a torch.nn.Module"):
        bad(entry_point="pipeline.classifier.train:cosine_lr", entry_kwargs={"step": 0, "total": 1})
    with pytest.raises(ClassifierError, match="weights file not found"):
        bad(weights=tmp_path / "none.safetensors")
    with pytest.raises(ClassifierError, match="no built-in classifier"):
        resolve_spec(ClassifierConfig(), tmp_path, 32)


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    from pipeline.config import ConfigError, config_from_dict

    def cfg(**c) -> None:
        config_from_dict({"cohort": "c", "workdir": str(tmp_path), "classifier": c})

    cases = [
        ({"model": "a.pt", "entry_point": "m:f", "weights": "w"}, "not both"),
        ({"entry_point": "m:f"}, "needs weights"),
        ({"entry_point": "mf", "weights": "w"}, "module:callable"),
        ({"mean": [0.5] * 3}, "both mean"),
        ({"mean": [0.5] * 2, "std": [1] * 2}, "3 values"),
        ({"predict": {"heatmaps": "lime"}}, r"classifier\.predict\.heatmaps"),
    ]
    for kw, msg in cases:
        with pytest.raises(ConfigError, match=msg):
            cfg(**kw)
