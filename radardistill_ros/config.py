"""Validated configuration: one YAML file per variant (``paper``, ``lite``) for data, model,
targets, losses, decoding and training.

Loading is strict: an unknown key, a missing key or a value of the wrong type is a
:class:`ConfigError` that names the key (``model.cma.channels: expected int, got str``). There
are no silent defaults for keys a file must state; fields with defaults below are the method's
fixed constants that a variant may override.

The shipped variants live in ``radardistill_ros/configs/<name>.yaml``; :func:`load_config`
takes a variant name or a path.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from radardistill_ros.conventions import RADAR_CHANNELS

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


class ConfigError(ValueError):
    """A configuration file or value is invalid; the message names the key."""


# --------------------------------------------------------------------------------------------
# sections


@dataclass(frozen=True)
class GridConfig:
    """BEV grid in the ego frame (base_link at the reference time), metres.

    ``point_cloud_range`` = [x_min, y_min, z_min, x_max, y_max, z_max]; ``pillar_size`` =
    [dx, dy]; the network's BEV maps have stride ``out_stride`` pillars.
    """

    point_cloud_range: tuple[float, float, float, float, float, float]
    pillar_size: tuple[float, float]
    out_stride: int

    @property
    def pillar_grid(self) -> tuple[int, int]:
        """Pillar grid size (nx, ny) along x and y."""
        r = self.point_cloud_range
        return (round((r[3] - r[0]) / self.pillar_size[0]), round((r[4] - r[1]) / self.pillar_size[1]))

    @property
    def bev_shape(self) -> tuple[int, int]:
        """BEV map size (H, W) = (ny, nx) / out_stride; rows index y, columns index x."""
        nx, ny = self.pillar_grid
        return (ny // self.out_stride, nx // self.out_stride)

    @property
    def cell_size(self) -> tuple[float, float]:
        """BEV cell size (x, y) in metres = pillar size * out_stride."""
        return (self.pillar_size[0] * self.out_stride, self.pillar_size[1] * self.out_stride)


@dataclass(frozen=True)
class AugmentConfig:
    """Global augmentation (training only): flips, rotation +-``rotation`` rad, scaling
    [lo, hi], translation with std ``translation_std`` m per axis."""

    flip_x: bool = True
    flip_y: bool = True
    rotation: float = 0.7853981633974483
    scale: tuple[float, float] = (0.9, 1.1)
    translation_std: float = 0.5


@dataclass(frozen=True)
class DataConfig:
    """Inputs: sweeps per radar and LiDAR sweeps, radar channels, augmentation."""

    radar_sweeps: int
    lidar_sweeps: int
    radar_channels: tuple[str, ...] = RADAR_CHANNELS
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass(frozen=True)
class CMAConfig:
    """Cross-Modality Alignment (DCNv2 down blocks, ConvNeXt V2 blocks, ConvTranspose ups)."""

    enabled: bool
    channels: int
    convnext_expansion: int
    down_blocks: int  # ConvNeXt V2 blocks per Down (after its DCN); the authors' code has 2


@dataclass(frozen=True)
class DenseEncConfig:
    """DenseEnc (PillarNet RPN-V1 topology): convs on x_conv5, then after the concat."""

    channels: int
    conv5_layers: int
    fuse_layers: int


@dataclass(frozen=True)
class HeadConfig:
    """CenterHead: shared conv, then per task either one conv pair per output (published) or
    one shared 3x3 conv per task followed by 1x1 output convs (``shared_per_task``)."""

    shared_channels: int
    head_channels: int
    shared_per_task: bool


@dataclass(frozen=True)
class ModelConfig:
    """PillarNet-18 trunk + CMA + DenseEnc + CenterHead (same trunk for teacher and student)."""

    vfe_channels: int
    backbone_channels: tuple[int, int, int, int]
    blocks_per_stage: tuple[int, int, int, int]
    conv5_blocks: int
    cma: CMAConfig
    dense_enc: DenseEncConfig
    head: HeadConfig
    sparse_backend: str = "auto"  # auto | torch | spconv


@dataclass(frozen=True)
class TargetConfig:
    """CenterPoint targets: max objects, gaussian overlap, min radius (cells)."""

    max_objects: int = 500
    gaussian_overlap: float = 0.1
    min_radius: int = 2


@dataclass(frozen=True)
class LossConfig:
    """Loss weights: L = L_det + gamma * L_AFD + delta * L_PFD and their hyper-parameters."""

    code_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.2, 0.2, 1.0, 1.0)
    hm_weight: float = 1.0
    reg_weight: float = 0.25
    iou_weight: float = 1.0
    diou_weight: float = 0.25
    gamma: float = 5.0
    delta: float = 25.0
    afd_alpha: float = 3e-4
    afd_beta: float = 5e-5
    pfd_sigma: float = 0.1
    pfd_lambda1: float = 5.0
    pfd_lambda2: float = 1.0
    pfd_tau: float = 0.5


@dataclass(frozen=True)
class PostConfig:
    """Decoding: heatmap peaks, score = hm^(1-r) * iou^r, threshold, post-centre range, per-task
    rotated NMS."""

    score_threshold: float = 0.1
    iou_rectifier: float = 0.5
    post_center_range: tuple[float, float, float, float, float, float] = (
        -61.2, -61.2, -10.0, 61.2, 61.2, 10.0)
    nms_iou_threshold: float = 0.2
    nms_pre_max: int = 1000
    nms_post_max: int = 83
    #: k x k max-pool peak extraction on the heatmaps before NMS (odd k; 0 or 1 = off, as published)
    peak_kernel: int = 0


@dataclass(frozen=True)
class TrainConfig:
    """Adam + one-cycle (max lr, div factor, pct_start, momentum range), weight decay, clip."""

    batch_size: int
    epochs: int
    lr: float = 1e-3
    weight_decay: float = 0.01
    div_factor: float = 10.0
    pct_start: float = 0.4
    momentum: tuple[float, float] = (0.95, 0.85)
    grad_clip: float = 10.0
    num_workers: int = 2
    seed: int = 0


#: The sections of a :class:`Config` that :meth:`Config.digest` covers.
DIGEST_SECTIONS: tuple[str, ...] = ("grid", "data", "model")


@dataclass(frozen=True)
class Config:
    """A complete variant."""

    name: str
    grid: GridConfig
    data: DataConfig
    model: ModelConfig
    targets: TargetConfig = field(default_factory=TargetConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    post: PostConfig = field(default_factory=PostConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(batch_size=4, epochs=20))

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (lists for tuples), loadable by :func:`config_from_dict`."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def digest(self) -> str:
        """sha256 of the canonical JSON form of :data:`DIGEST_SECTIONS` (grid, input data,
        architecture): what a checkpoint's weights and an engine's tensors depend on. Checkpoints
        and engines store it and are refused under a config with another digest. Targets, losses,
        the training recipe and post-processing are not part of it: changing them (a new decode
        option, another score threshold) keeps existing checkpoints and engines valid."""
        d = self.to_dict()
        canonical = json.dumps({k: d[k] for k in DIGEST_SECTIONS}, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# strict loading


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check/convert ``value`` to type ``tp`` (dataclass, tuple, primitives, unions)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return _build(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            if arg is type(None):
                if value is None:
                    return None
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected a list of {len(args)} values, got {len(value)}")
        return tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected bool, got {type(value).__name__} ({value!r})")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected int, got {type(value).__name__} ({value!r})")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected float, got {type(value).__name__} ({value!r})")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected str, got {type(value).__name__} ({value!r})")
        return value
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for k in data:
        if k not in fields:
            where = f"{prefix}.{k}" if prefix else str(k)
            raise ConfigError(f"{where}: unknown key (allowed: {', '.join(fields)})")
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{key}: missing required key")
    obj = cls(**kwargs)
    _validate(obj, prefix)
    return obj


def _validate(obj: Any, prefix: str) -> None:
    """Range checks that types cannot express."""

    def bad(name: str, why: str) -> ConfigError:
        return ConfigError(f"{prefix + '.' if prefix else ''}{name}: {why}")

    if isinstance(obj, GridConfig):
        r = obj.point_cloud_range
        if not (r[0] < r[3] and r[1] < r[4] and r[2] < r[5]):
            raise bad("point_cloud_range", f"min must be below max, got {list(r)}")
        if min(obj.pillar_size) <= 0:
            raise bad("pillar_size", "must be positive")
        for axis, (lo, hi, size) in enumerate(((r[0], r[3], obj.pillar_size[0]),
                                               (r[1], r[4], obj.pillar_size[1]))):
            n = (hi - lo) / size
            if abs(n - round(n)) > 1e-4 or round(n) % (obj.out_stride * 4) != 0:
                raise bad("pillar_size", f"axis {axis}: range/pillar = {n:.4f} must be an integer "
                          f"divisible by out_stride*4 = {obj.out_stride * 4}")
    elif isinstance(obj, DataConfig):
        if obj.radar_sweeps < 1 or obj.lidar_sweeps < 1:
            raise bad("radar_sweeps", "sweep counts must be >= 1")
        unknown = set(obj.radar_channels) - set(RADAR_CHANNELS)
        if unknown:
            raise bad("radar_channels", f"unknown channels {sorted(unknown)}")
    elif isinstance(obj, ModelConfig):
        if obj.sparse_backend not in ("auto", "torch", "spconv"):
            raise bad("sparse_backend", f"expected auto|torch|spconv, got {obj.sparse_backend!r}")
        sizes = {"vfe_channels": obj.vfe_channels, "conv5_blocks": obj.conv5_blocks,
                 "cma.channels": obj.cma.channels, "cma.convnext_expansion": obj.cma.convnext_expansion,
                 "cma.down_blocks": obj.cma.down_blocks, "dense_enc.channels": obj.dense_enc.channels,
                 "dense_enc.conv5_layers": obj.dense_enc.conv5_layers,
                 "head.shared_channels": obj.head.shared_channels,
                 "head.head_channels": obj.head.head_channels}
        sizes.update({f"backbone_channels[{i}]": c for i, c in enumerate(obj.backbone_channels)})
        for name, v in sizes.items():
            if v < 1:
                raise bad(name, f"must be >= 1, got {v}")
        if obj.dense_enc.fuse_layers < 0 or min(obj.blocks_per_stage) < 0:
            raise bad("dense_enc.fuse_layers", "layer/block counts must be >= 0")
        if obj.vfe_channels != obj.backbone_channels[0]:
            raise bad("vfe_channels", f"must equal backbone_channels[0] = {obj.backbone_channels[0]} "
                      "(stage 1 is residual)")
        if obj.cma.channels != obj.backbone_channels[3]:
            raise bad("cma.channels", f"must equal backbone_channels[3] = {obj.backbone_channels[3]} "
                      "(F^{a(n)} is distilled against the teacher's x_conv4)")
    elif isinstance(obj, PostConfig):
        if not 0.0 <= obj.iou_rectifier <= 1.0:
            raise bad("iou_rectifier", "must be in [0, 1]")
        if obj.peak_kernel < 0 or (obj.peak_kernel > 1 and obj.peak_kernel % 2 == 0):
            raise bad("peak_kernel", f"must be 0 (off) or an odd window size, got {obj.peak_kernel}")
        if not 0.0 <= obj.score_threshold < 1.0:
            raise bad("score_threshold", f"must be in [0, 1), got {obj.score_threshold}")
        if obj.nms_pre_max < 1 or obj.nms_post_max < 1:
            raise bad("nms_pre_max", "nms_pre_max and nms_post_max must be >= 1")
    elif isinstance(obj, LossConfig):
        if len(obj.code_weights) != 10:
            raise bad("code_weights", f"expected 10 values, got {len(obj.code_weights)}")


def config_from_dict(data: dict[str, Any]) -> Config:
    """Build a :class:`Config` from a plain dict (as read from YAML), strictly."""
    if not isinstance(data, dict):
        raise ConfigError(f"config: expected a mapping at top level, got {type(data).__name__}")
    return _build(Config, data)


def load_config(name_or_path: str | Path) -> Config:
    """Load a shipped variant by name (``"lite"``, ``"paper"``) or a YAML file by path."""
    p = Path(name_or_path)
    if not p.suffix and not p.exists():
        p = CONFIG_DIR / f"{name_or_path}.yaml"
    if not p.is_file():
        shipped = sorted(f.stem for f in CONFIG_DIR.glob("*.yaml"))
        raise ConfigError(f"config file not found: {p} (shipped variants: {shipped})")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from e
    try:
        return config_from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None
