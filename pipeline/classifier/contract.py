"""The classifier contract: what a model to explain must be, and loading it safely.

A classifier takes float32 ``[N, C, H, W]`` in [0, 1] — RGB (C = 3) for histology, grey
(C = 1) for radiology; its ``channels`` — (normalised with its mean/std when it has one) at its
``input_size`` and returns logits ``[N]`` (binary: the logit of class 1) or ``[N, C]``. Grey
tiles are repeated to 3 channels for an RGB model (e.g. an ImageNet-pretrained radiology
model). It comes as a TorchScript file or as a ``module:callable`` returning an ``nn.Module``
plus a safetensors state dict; nothing is unpickled. ``load_classifier`` checks the model on a
probe batch before any work and raises ``ClassifierError`` naming the file.
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import ClassifierConfig
from pipeline.io.models import card_path, load_torchscript, load_weights, read_card
from pipeline.io.paths import WorkPath, as_path, is_remote, is_url

BUILTIN_DIR = "classifier"  # under the workdir
BUILTIN_CARD = "model.json"


class ClassifierError(ValueError):
    """The classifier is missing, not a model, or breaks the contract; names the file."""


@dataclass(frozen=True)
class ClassifierSpec:
    """Where a classifier comes from and how to feed it (config merged over its card)."""

    kind: Literal["torchscript", "module"]
    source: str  # the file (or entry point) named in errors
    input_size: int
    path: WorkPath | None = None  # TorchScript file
    entry_point: str | None = None
    weights: WorkPath | None = None
    entry_kwargs: dict[str, Any] = field(default_factory=dict)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    class_names: tuple[str, ...] | None = None
    explain: str | int | None = None
    gradcam_layer: str | None = None  # module name; None: the last Conv2d
    channels: int = 3  # input channels the model takes (3 RGB, 1 grey)

    def files(self) -> list[WorkPath]:
        """The files whose bytes define the model (for fingerprints)."""
        return [p for p in (self.path, self.weights) if p is not None]

    def fingerprint(self) -> str:
        """sha256 over the model files' bytes and everything else that changes outputs."""
        h = hashlib.sha256()
        for p in self.files():
            with p.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        meta = (
            self.kind,
            self.entry_point,
            sorted(self.entry_kwargs.items()),
            self.input_size,
            self.mean,
            self.std,
            self.class_names,
            self.explain,
            self.gradcam_layer,
        )
        if self.channels != 3:  # (RGB fingerprints stay as they were before channels existed)
            meta = (*meta, self.channels)
        h.update(repr(meta).encode())
        return h.hexdigest()[:16]


def _resolve_path(
    raw: str, base: WorkPath | None = None, storage_options: dict[str, Any] | None = None
) -> WorkPath:
    """A model file: a URL (opened with ``storage_options``), or a local path (relative: to
    ``base``, else to the current directory)."""
    if is_url(raw):
        return as_path(raw, storage_options)
    if base is not None and not isinstance(base, Path):  # relative to a URL folder
        return base / raw
    p = Path(raw).expanduser()
    if not p.is_absolute():
        p = (base / p) if base is not None else p.absolute()
    return p


def resolve_spec(
    ccfg: ClassifierConfig, workdir: WorkPath, tile_size: int, tile_channels: int = 3
) -> ClassifierSpec:
    """Config + the model's JSON card → spec. Without ``model``/``entry_point``: the built-in
    classifier of ``workdir`` (loaded as an ``nn.Module`` so GradCAM can see inside). The
    model's input channels: ``classifier.channels``, else the card's, else the tiles'."""
    kwargs: dict[str, Any] = {}
    workdir = as_path(workdir)
    # Model URLs are opened like the workdir (same endpoint and options) when it is remote too.
    opts = dict(workdir.storage_options) if is_remote(workdir) else None
    if ccfg.model:
        path = _resolve_path(ccfg.model, storage_options=opts)
        card_file = card_path(path)
        kwargs.update(kind="torchscript", source=str(path), path=path)
    elif ccfg.entry_point:
        weights = _resolve_path(ccfg.weights or "", storage_options=opts)
        card_file = card_path(weights)
        kwargs.update(
            kind="module",
            source=f"{ccfg.entry_point} + {weights}",
            entry_point=ccfg.entry_point,
            weights=weights,
            entry_kwargs=dict(ccfg.entry_kwargs),
        )
    else:
        card_file = workdir / BUILTIN_DIR / BUILTIN_CARD
        if not card_file.is_file():
            raise ClassifierError(
                f"{card_file}: no built-in classifier; run `stylepath train-classifier` or set "
                "classifier.model (TorchScript) or classifier.entry_point + weights"
            )
    try:
        card = read_card(card_file) or {}
    except ValueError as exc:
        raise ClassifierError(str(exc)) from None
    if not kwargs:  # the built-in: its card says how to rebuild the nn.Module
        try:
            weights = _resolve_path(card["weights"], card_file.parent)
            kwargs.update(
                kind="module",
                source=f"{card['entry_point']} + {weights}",
                entry_point=card["entry_point"],
                weights=weights,
                entry_kwargs=dict(card.get("entry_kwargs", {})),
            )
        except KeyError as exc:
            raise ClassifierError(f"{card_file}: model card lacks {exc}") from None
    mean = ccfg.mean if ccfg.mean is not None else card.get("mean")
    std = ccfg.std if ccfg.std is not None else card.get("std")
    if not ccfg.normalize:
        mean = std = None
    names = ccfg.class_names if ccfg.class_names is not None else card.get("class_names")
    channels = int(ccfg.channels or card.get("channels") or tile_channels)
    source = kwargs["source"]
    for name, v in (("mean", mean), ("std", std)):
        if v is not None and len(v) != channels:
            raise ClassifierError(
                f"{source}: {name} has {len(v)} value(s) for a model with "
                f"{channels} input channel(s)"
            )
    if not (channels == tile_channels or (channels == 3 and tile_channels == 1)):
        raise ClassifierError(
            f"{source}: the model takes {channels} channel(s) but the tiles "
            f"have {tile_channels}; set classifier.channels"
        )
    return ClassifierSpec(
        input_size=int(ccfg.input_size or card.get("input_size") or tile_size),
        mean=tuple(float(v) for v in mean) if mean is not None else None,
        std=tuple(float(v) for v in std) if std is not None else None,
        class_names=tuple(str(n) for n in names) if names is not None else None,
        explain=ccfg.explain if ccfg.explain is not None else card.get("explain"),
        gradcam_layer=ccfg.predict.gradcam_layer or card.get("gradcam_layer"),
        channels=channels,
        **kwargs,
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def load_model(spec: ClassifierSpec, device: str | torch.device = "cpu") -> nn.Module:
    """The raw model in eval mode (no checks of its outputs yet)."""
    if spec.kind == "torchscript":
        assert spec.path is not None
        if not spec.path.is_file():
            raise ClassifierError(f"{spec.path}: classifier file not found")
        try:
            model = load_torchscript(spec.path, device)
        except Exception as exc:  # noqa: BLE001 - any reason the archive cannot load
            raise ClassifierError(
                f"{spec.path}: not a TorchScript model ({_first_line(exc)}); save it with "
                "torch.jit.save(torch.jit.script(model), path)"
            ) from None
    else:
        assert spec.entry_point is not None and spec.weights is not None
        if not spec.weights.is_file():
            raise ClassifierError(f"{spec.weights}: weights file not found")
        module_name, _, attr = spec.entry_point.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ClassifierError(
                f"{spec.entry_point}: cannot import ({_first_line(exc)})"
            ) from None
        try:
            model = factory(**spec.entry_kwargs)
        except Exception as exc:  # noqa: BLE001
            raise ClassifierError(f"{spec.entry_point}: call failed ({_first_line(exc)})") from None
        if not isinstance(model, nn.Module):
            raise ClassifierError(
                f"{spec.entry_point}: returned {type(model).__name__}, not a torch.nn.Module"
            )
        try:
            model.load_state_dict(load_weights(spec.weights), strict=True)
        except (ValueError, RuntimeError) as exc:
            raise ClassifierError(
                f"{spec.weights}: weights do not fit {spec.entry_point} ({_first_line(exc)})"
            ) from None
        model = model.to(device)
    return model.eval()


def tiles_to_tensor(tiles: np.ndarray) -> torch.Tensor:
    """uint8 ``[N, H, W, C]`` → float32 ``[N, C, H, W]`` in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(tiles)).permute(0, 3, 1, 2).float().div_(255.0)


class Classifier(nn.Module):
    """A checked classifier: ``forward`` takes [0, 1] images of its channels at any size
    (resized, normalised; grey repeated to RGB for a 3-channel model); ``prob``/``score``
    pick the explained class from the logits. Differentiable."""

    def __init__(
        self,
        model: nn.Module,
        spec: ClassifierSpec,
        n_outputs: int,
        explain_index: int,
        class_names: tuple[str, ...],
    ) -> None:
        super().__init__()
        self.model = model
        self.spec = spec
        self.n_outputs = n_outputs  # 1: logits [N]
        self.explain_index = explain_index
        self.class_names = class_names
        self.input_size = spec.input_size
        c = spec.channels
        mean = spec.mean if spec.mean is not None else (0.0,) * c
        std = spec.std if spec.std is not None else (1.0,) * c
        self.register_buffer("mean", torch.tensor(mean).view(1, c, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, c, 1, 1), persistent=False)

    @property
    def explained_class(self) -> str:
        return self.class_names[self.explain_index]

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] images → what the model eats: its channels, resized to ``input_size``,
        normalised."""
        c = self.spec.channels
        if x.shape[1] != c:
            if x.shape[1] == 1 and c == 3:
                x = x.expand(-1, 3, -1, -1)
            else:
                raise ValueError(f"{self.spec.source}: takes {c} channel(s), got {x.shape[1]}")
        s = self.input_size
        if x.shape[-2:] != (s, s):
            x = F.interpolate(
                x, size=(s, s), mode="bilinear", align_corners=False, antialias=x.shape[-1] > s
            )
        if self.spec.mean is not None:
            x = (x - self.mean) / self.std
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.prepare(x))

    def prob(self, logits: torch.Tensor) -> torch.Tensor:
        """Probability of the explained class, ``[N]``."""
        if self.n_outputs == 1:
            z = logits.reshape(-1)
            return torch.sigmoid(z if self.explain_index == 1 else -z)
        return torch.softmax(logits, dim=1)[:, self.explain_index]

    def score(self, logits: torch.Tensor) -> torch.Tensor:
        """The explained class's logit (sign-flipped for class 0 of a binary model), ``[N]``."""
        if self.n_outputs == 1:
            z = logits.reshape(-1)
            return z if self.explain_index == 1 else -z
        return logits[:, self.explain_index]

    @property
    def is_script(self) -> bool:
        return isinstance(self.model, torch.jit.ScriptModule)


def _probe(model: nn.Module, spec: ClassifierSpec, n: int, device) -> torch.Tensor:
    s, c = spec.input_size, spec.channels
    gen = torch.Generator().manual_seed(n)
    x = torch.rand(n, c, s, s, generator=gen)
    if spec.mean is not None:
        x = (x - torch.tensor(spec.mean).view(1, c, 1, 1)) / torch.tensor(spec.std).view(1, c, 1, 1)
    try:
        with torch.no_grad():
            out = model(x.to(device))
    except Exception as exc:  # noqa: BLE001 - the model cannot take this input
        raise ClassifierError(
            f"{spec.source}: fails on input [{n}, {c}, {s}, {s}] (input_size {s} or {c} "
            f"channel(s) impossible for this model? set classifier.input_size / "
            f"classifier.channels): {_first_line(exc)}"
        ) from None
    if not isinstance(out, torch.Tensor):
        raise ClassifierError(f"{spec.source}: returns {type(out).__name__}, not a tensor")
    ok = out.is_floating_point() and (
        (out.ndim == 1 and out.shape[0] == n) or (out.ndim == 2 and out.shape[0] == n)
    )
    if not ok or (out.ndim == 2 and out.shape[1] < 1):
        raise ClassifierError(
            f"{spec.source}: output {out.dtype} {list(out.shape)} for input [{n}, {c}, {s}, {s}]; "
            f"the contract is float logits [N] or [N, C]"
        )
    if not torch.isfinite(out).all():
        raise ClassifierError(f"{spec.source}: non-finite outputs (NaN or inf) on a probe batch")
    return out


def load_classifier(spec: ClassifierSpec, device: str | torch.device = "cpu") -> Classifier:
    """Load and check a classifier (probe batches of 2 and 1 random tiles); raises
    ``ClassifierError`` for a missing file, a non-model, a wrong output shape, NaN outputs, an
    input size the model cannot take, or class names / explained class that do not fit."""
    model = load_model(spec, device)
    out2 = _probe(model, spec, 2, device)
    out1 = _probe(model, spec, 1, device)
    if out1.shape[1:] != out2.shape[1:]:
        raise ClassifierError(
            f"{spec.source}: output shape depends on the batch ({list(out2.shape)} for N=2, "
            f"{list(out1.shape)} for N=1); the contract is [N] or [N, C]"
        )
    n_outputs = 1 if out2.ndim == 1 else int(out2.shape[1])
    n_classes = 2 if n_outputs == 1 else n_outputs
    names = spec.class_names or tuple(str(i) for i in range(n_classes))
    if len(names) != n_classes:
        raise ClassifierError(
            f"{spec.source}: {len(names)} class names {list(names)} for a model with "
            f"{n_classes} classes (output {list(out2.shape)})"
        )
    explain = spec.explain
    if explain is None:
        if n_classes != 2:
            raise ClassifierError(f"{spec.source}: {n_classes} classes; set classifier.explain")
        index = 1
    elif isinstance(explain, int):
        if not 0 <= explain < n_classes:
            raise ClassifierError(f"{spec.source}: explain={explain} but {n_classes} classes")
        index = explain
    elif explain in names:
        index = names.index(explain)
    else:
        raise ClassifierError(f"{spec.source}: class {explain!r} not in {list(names)}")
    return Classifier(model, spec, n_outputs, index, tuple(names)).to(device)
