"""YAML run configurations for ``recon train``: a model, its training settings and its data pipeline.

A config file has up to three sections, each holding overrides of dataclass defaults::

    model:                      # required: the registry name plus fields of the model's config dataclass
      name: cirim               #   (recon.models: CIRIMConfig, RIMConfig, RecurrentVarNetConfig)
      num_cascades: 2
    train:                      # fields of TrainConfig below (not model / model_config /
      max_steps: 2000           #   checkpoint_dir / resume, which the command line sets)
      lr: 1.0e-3
    data:                       # fields of DataConfig below: masks, accelerations, coil maps, scaling, crop
      accelerations: [4, 8]

Every unknown key is an error that names the key, its section, the valid keys and the file; so is a value of the
wrong type (e.g. a string where a number is expected). :func:`save_config` writes the resolved config (every field,
defaults included) back as YAML, and :func:`load_config` reads it again to the same :class:`ReconConfig`.

The settings dataclasses (:class:`TrainConfig`, :class:`DataConfig`) live here so that this module imports nothing
from :mod:`recon.training`, which imports it.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from recon.data.keys import MaskType

__all__ = [
    "ConfigError",
    "DataConfig",
    "PRECISIONS",
    "ReconConfig",
    "TRAIN_KEYS_SET_BY_CLI",
    "TrainConfig",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "save_config",
]

SECTIONS = ("model", "train", "data")
TRAIN_KEYS_SET_BY_CLI = ("model", "model_config", "checkpoint_dir", "resume")
SENS_METHODS = ("acs", "espirit")
NORMALIZE_MODES = ("max", "mean")
PRECISIONS = ("fp32", "bf16")
LINE_MASKS = tuple(m.value for m in MaskType if m not in (MaskType.GAUSSIAN_2D, MaskType.POISSON_2D))


class ConfigError(ValueError):
    """A config file (or dict) is invalid; the message names the file, the section and the key."""


@dataclass
class DataConfig:
    """How training / validation slices are built from fully sampled fastMRI-style files.

    Each training slice is undersampled on the fly: a mask type is drawn uniformly from ``mask_types`` and an
    ``(acceleration, center_fraction)`` pair uniformly from the paired lists (fastMRI's ``MaskFunc`` convention);
    the draw is a function of ``(seed, epoch, index)`` only, so resumed runs see the same masks. Validation masks are
    fixed per file and slice. Coil maps are estimated from the fully sampled centre of the undersampled k-space
    (:func:`recon.ops.estimate_sens_maps`), and k-space and target are divided by ``scale``, a statistic of the
    zero-filled RSS image (:class:`recon.data.transforms.KspaceNormalize`); predictions are multiplied back.

    Attributes:
        mask_types: line-mask families (:func:`recon.data.create_mask_for_mask_type`), drawn uniformly.
        accelerations: undersampling factors, paired by index with ``center_fractions``.
        center_fractions: fractions of fully sampled central columns.
        sens_method: ``"acs"`` or ``"espirit"`` coil-map estimation.
        normalize: ``"max"`` or ``"mean"`` of the zero-filled RSS image as the scale.
        crop: ``[h, w]`` centre crop applied to predictions and targets in the loss and the validation SSIM;
            ``None`` uses the recon matrix of each file (the stored target's size, as fastMRI evaluates).
        challenge: ``"multicoil"`` (the models need coil maps, so single-coil data is refused).
        noise_floor: report ``sqrt(|x|^2 + b^2)`` instead of ``|x|``, with ``b`` the noise floor of the RSS target
            measured on the input k-space (:mod:`recon.ops.noise`); trained and used with it, the model estimates
            the noise-free image and the floor term accounts for the noise in fastMRI's RSS target.
    """

    mask_types: list[str] = field(default_factory=lambda: ["equispaced_fraction", "random"])
    accelerations: list[float] = field(default_factory=lambda: [4, 8])
    center_fractions: list[float] = field(default_factory=lambda: [0.08, 0.04])
    sens_method: str = "acs"
    normalize: str = "max"
    crop: list[int] | None = None
    challenge: str = "multicoil"
    noise_floor: bool = False

    def __post_init__(self) -> None:
        self.mask_types = list(self.mask_types)
        self.accelerations = list(self.accelerations)
        self.center_fractions = list(self.center_fractions)
        if not self.mask_types:
            raise ValueError("mask_types must not be empty")
        for m in self.mask_types:
            if m not in LINE_MASKS:
                raise ValueError(f"mask_types: {m!r} is not a line mask; choose from {list(LINE_MASKS)}")
        if not self.accelerations or len(self.accelerations) != len(self.center_fractions):
            raise ValueError(
                f"accelerations {self.accelerations} and center_fractions {self.center_fractions} must be non-empty "
                "and of the same length (paired by index)"
            )
        if any(not (math.isfinite(a) and a >= 1) for a in self.accelerations) or any(
            not 0 < c <= 1 for c in self.center_fractions
        ):
            raise ValueError("accelerations must be finite and >= 1 and center_fractions in (0, 1]")
        if self.sens_method not in SENS_METHODS:
            raise ValueError(f"sens_method must be one of {list(SENS_METHODS)}; got {self.sens_method!r}")
        if self.normalize not in NORMALIZE_MODES:
            raise ValueError(f"normalize must be one of {list(NORMALIZE_MODES)}; got {self.normalize!r}")
        if self.crop is not None:
            self.crop = list(self.crop)
            if len(self.crop) != 2 or any(not isinstance(c, int) or c < 7 for c in self.crop):
                raise ValueError(f"crop must be null or [h, w] with integers >= 7; got {self.crop}")
        if self.challenge != "multicoil":
            raise ValueError(f"challenge must be 'multicoil' (the models need coil maps); got {self.challenge!r}")


@dataclass
class TrainConfig:
    """Training settings.

    Attributes:
        model: registry name (``"rim"``, ``"cirim"``, ``"recurrentvarnet"``).
        model_config: config overrides passed to :func:`recon.models.create_model`.
        max_steps: optimizer steps in total.
        batch_size: samples per step and rank.
        lr: peak learning rate of AdamW.
        weight_decay: AdamW weight decay.
        betas: AdamW betas.
        warmup_steps: linear warm-up steps from 0 to ``lr``.
        schedule: ``"cosine"`` (decay to ``min_lr_ratio * lr`` at ``max_steps``) or ``"constant"`` after warm-up.
        min_lr_ratio: final LR of the cosine schedule as a fraction of ``lr``.
        grad_clip: max global gradient norm (``None`` or ``<= 0``: no clipping).
        ssim_weight: weight of ``1 - SSIM`` in the loss.
        l1_weight: weight of L1 in the loss.
        amp: mixed precision (bfloat16 autocast) when training on CUDA (``precision`` sets it on any device).
        precision: ``"fp32"`` or ``"bf16"`` (bfloat16 autocast on any device, fp32 master weights).
        channels_last: keep the model's conv weights in channels-last (NHWC) memory format.
        seed: seed of the initialisation and the data order.
        device: ``"cpu"``, ``"cuda"``, ...; ``None`` picks CUDA when available (``cuda:LOCAL_RANK`` under DDP).
        num_workers: DataLoader worker processes (0: items are read in the training process).
        prefetch_factor: batches each worker reads ahead (with ``num_workers > 0``).
        checkpoint_dir: where checkpoints go (``step-XXXXXXXX`` folders and ``last``); ``None``: none written.
        checkpoint_every: save every this many steps (and at the end); 0: only at the end.
        resume: checkpoint folder to resume from (``"last"`` resolves to ``checkpoint_dir/last`` if it exists).
        log_every: log the loss every this many steps on rank 0 (0: silent).
        val_every: run the validation hook every this many steps on rank 0 (0: only at the end).
        progress: show a tqdm progress bar on rank 0.
    """

    model: str = "cirim"
    model_config: dict[str, Any] = field(default_factory=dict)
    max_steps: int = 1000
    batch_size: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    schedule: str = "cosine"
    min_lr_ratio: float = 0.0
    grad_clip: float | None = 1.0
    ssim_weight: float = 1.0
    l1_weight: float = 1.0
    amp: bool = True
    precision: str = "fp32"
    channels_last: bool = True
    seed: int = 0
    device: str | None = None
    num_workers: int = 0
    prefetch_factor: int = 2
    checkpoint_dir: str | None = None
    checkpoint_every: int = 0
    resume: str | None = None
    log_every: int = 0
    val_every: int = 0
    progress: bool = False

    def __post_init__(self) -> None:
        if self.max_steps < 0 or self.batch_size < 1 or self.warmup_steps < 0:
            raise ValueError("max_steps and warmup_steps must be >= 0 and batch_size >= 1")
        if self.log_every < 0 or self.val_every < 0 or self.checkpoint_every < 0:
            raise ValueError("log_every, val_every and checkpoint_every must be >= 0")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}; got {self.precision!r}")
        if self.num_workers < 0 or self.prefetch_factor < 1:
            raise ValueError("num_workers must be >= 0 and prefetch_factor >= 1")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant'; got {self.schedule!r}")
        self.betas = tuple(self.betas)


@dataclass
class ReconConfig:
    """A resolved run configuration.

    Attributes:
        model: registry name (``"cirim"``, ``"rim"``, ``"recurrentvarnet"``).
        model_config: overrides of the model's config dataclass.
        train: the training settings (its ``model`` / ``model_config`` mirror the two fields above).
        data: the data pipeline.
        source: the file it was read from (for messages), or ``None``.
    """

    model: str
    model_config: dict[str, Any]
    train: TrainConfig
    data: DataConfig
    source: str | None = None


def _where(source: str | None) -> str:
    return f"{source}: " if source else ""


def _type_error(value: Any, expected: Any) -> str | None:
    """A description of the mismatch between ``value`` and the type of the default ``expected``, or None."""
    if expected is None or value is None:
        return None
    if isinstance(expected, enum.Enum):
        expected = expected.value
    if isinstance(expected, bool):
        return None if isinstance(value, bool) else "a boolean (true / false)"
    if isinstance(expected, int):
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    if isinstance(expected, float):
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "a number"
    if isinstance(expected, str):
        return None if isinstance(value, str) else "a string"
    if isinstance(expected, (list, tuple)):
        return None if isinstance(value, (list, tuple)) else "a list"
    if isinstance(expected, dict):
        return None if isinstance(value, Mapping) else "a mapping"
    return None


def _defaults(cls: type) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
        else:
            out[f.name] = None
    return out


def _check_section(section: str, values: Any, valid: dict[str, Any], source: str | None) -> dict[str, Any]:
    """Reject non-mappings, unknown keys and values of the wrong type (naming file, section, key, valid keys)."""
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise ConfigError(f"{_where(source)}section '{section}' must be a mapping; got {type(values).__name__}")
    for key, value in values.items():
        if key not in valid:
            raise ConfigError(
                f"{_where(source)}unknown key '{key}' in section '{section}'; valid keys: {sorted(valid)}"
            )
        problem = _type_error(value, valid[key])
        if problem is not None:
            raise ConfigError(f"{_where(source)}{section}.{key} must be {problem}; got {value!r}")
    return dict(values)


def config_from_dict(raw: Any, source: str | os.PathLike | None = None) -> ReconConfig:
    """Validate a parsed config and build a :class:`ReconConfig`.

    Args:
        raw: the mapping with sections ``model`` (required, with ``name``), ``train``, ``data``.
        source: the file it came from, for error messages.

    Raises:
        ConfigError: naming the file, the section and the key for unknown keys, wrong types and invalid values.
    """
    from recon.models import MODELS, list_models

    src = None if source is None else os.fspath(source)
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{_where(src)}a config must be a mapping with sections {list(SECTIONS)}")
    for key in raw:
        if key not in SECTIONS:
            raise ConfigError(f"{_where(src)}unknown top-level key '{key}'; valid keys: {list(SECTIONS)}")
    model_raw = raw.get("model")
    if not isinstance(model_raw, Mapping) or "name" not in model_raw:
        raise ConfigError(f"{_where(src)}section 'model' with a 'name' is required; valid names: {list_models()}")
    name = model_raw["name"]
    if name not in MODELS:
        raise ConfigError(f"{_where(src)}model.name {name!r} is not a model; valid names: {list_models()}")
    model_defaults = {"name": name, **_defaults(MODELS[name][1])}
    model_config = _check_section("model", model_raw, model_defaults, src)
    model_config.pop("name")

    train_valid = {k: v for k, v in _defaults(TrainConfig).items() if k not in TRAIN_KEYS_SET_BY_CLI}
    train_values = _check_section("train", raw.get("train"), train_valid, src)
    data_values = _check_section("data", raw.get("data"), _defaults(DataConfig), src)
    try:
        MODELS[name][1](**model_config)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{_where(src)}section 'model': {err}") from None
    try:
        train = TrainConfig(model=name, model_config=model_config, **train_values)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{_where(src)}section 'train': {err}") from None
    try:
        data = DataConfig(**data_values)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{_where(src)}section 'data': {err}") from None
    return ReconConfig(name, model_config, train, data, src)


def load_config(path: str | os.PathLike) -> ReconConfig:
    """Read and validate a YAML config file (see the module docstring).

    Raises:
        ConfigError: for a missing or unreadable file, invalid YAML, or any invalid section / key / value; the
            message starts with the file path.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: not a readable YAML file ({err})") from None
    return config_from_dict(raw, path)


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def config_to_dict(config: ReconConfig) -> dict[str, Any]:
    """The resolved config as plain YAML-able data: every field of every section, defaults included."""
    from recon.models import MODELS

    model_cfg = MODELS[config.model][1](**config.model_config)
    model = {"name": config.model, **{f.name: getattr(model_cfg, f.name) for f in dataclasses.fields(model_cfg)}}
    train = {k: v for k, v in dataclasses.asdict(config.train).items() if k not in TRAIN_KEYS_SET_BY_CLI}
    return _plain({"model": model, "train": train, "data": dataclasses.asdict(config.data)})


def save_config(config: ReconConfig, path: str | os.PathLike) -> Path:
    """Write the resolved config as YAML, atomically and with normal file permissions
    (:func:`recvision.utils.atomic.atomic_write`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(config_to_dict(config), sort_keys=False)
    from recvision.utils.atomic import atomic_write

    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))
