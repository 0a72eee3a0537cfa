"""The PillarNet-18 detector, teacher (LiDAR) and student (radar, with CMA), in two parts.

* :class:`PillarFrontEnd`: points (N, 1 + F) -> pillarise -> VFE (F^{2D}) -> SparseEnc ->
  x_conv4 = F^l (B, C4, H, W), dense. Sparse and data-dependent: runs in torch.
* :class:`DensePart`: x_conv4 -> stage 5 (x_conv5) -> CMA (student) -> DenseEnc -> CenterHead.
  Dense and static-shaped: the part that is exported to ONNX / TensorRT. Its ``forward`` takes
  x_conv4 and returns the head outputs (list over tasks of dicts, ``head.HEAD_KEYS`` order);
  :class:`FlatDensePart` returns them as a flat tuple named by ``head.head_output_names()``.

x_conv5 (and so F^{h(1)}) is computed from the pre-CMA x_conv4, as in the authors' code (the
paper's text implies after CMA); F^{a(2)} replaces x_conv4 only in DenseEnc's concat.
Teacher and student are the same class; the modality picks the input width (LiDAR 5 -> VFE 14,
radar 6 -> VFE 15) and whether CMA exists (radar only, when ``model.cma.enabled``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from radardistill_ros.config import Config, GridConfig, ModelConfig
from radardistill_ros.conventions import LIDAR_FEATURES, RADAR_FEATURES, TASKS
from radardistill_ros.model.backbone import Conv5, SparseEncoder
from radardistill_ros.model.cma import CMA
from radardistill_ros.model.dense_enc import DenseEnc
from radardistill_ros.model.head import CenterHead, HeadOutput, flatten_head
from radardistill_ros.model.pillars import pillarize
from radardistill_ros.model.sparse import SparseTensor, resolve_backend
from radardistill_ros.model.vfe import PillarVFE

Modality = Literal["radar", "lidar"]
MODALITIES: tuple[str, ...] = ("radar", "lidar")
POINT_FEATURES: dict[str, tuple[str, ...]] = {"radar": RADAR_FEATURES, "lidar": LIDAR_FEATURES}


class PillarFrontEnd(nn.Module):
    """Points (N, 1 + F) [batch, features] -> x_conv4 = F^l (B, C4, H/8, W/8) dense."""

    def __init__(self, grid: GridConfig, model: ModelConfig, num_point_features: int):
        super().__init__()
        self.grid = grid
        backend = resolve_backend(model.sparse_backend)
        self.vfe = PillarVFE(num_point_features, model.vfe_channels, grid)
        self.encoder = SparseEncoder(model.backbone_channels, model.blocks_per_stage, backend)

    def forward(self, points: Tensor, batch_size: int) -> Tensor:
        p = pillarize(points, self.grid, batch_size)
        f2d = SparseTensor(self.vfe(p), p.coords, p.grid, batch_size)
        return self.encoder(f2d)


@dataclass
class DenseFeatures:
    """Outputs of :meth:`DensePart.features`; maps are (B, C, H, W) at the x_conv4 size.

    ``aligned1``/``aligned2`` = F^{a(1)}/F^{a(2)} (None without CMA); ``high1``/``high2`` =
    F^{h(1)}/F^{h(2)}; ``head`` the CenterHead outputs.
    """

    aligned1: Tensor | None
    aligned2: Tensor | None
    high1: Tensor
    high2: Tensor
    head: HeadOutput


class DensePart(nn.Module):
    """x_conv4 (B, C4, H, W) -> stage 5 -> [CMA] -> DenseEnc -> CenterHead."""

    def __init__(self, model: ModelConfig, use_cma: bool):
        super().__init__()
        c4 = model.backbone_channels[3]
        self.conv5 = Conv5(c4, model.conv5_blocks)
        self.cma = CMA(model.cma.channels, model.cma.convnext_expansion, model.cma.down_blocks) \
            if use_cma else None
        d = model.dense_enc
        self.dense_enc = DenseEnc(c4, d.channels, d.conv5_layers, d.fuse_layers)
        h = model.head
        self.head = CenterHead(d.channels, h.shared_channels, h.head_channels, h.shared_per_task, TASKS)

    def features(self, x_conv4: Tensor) -> DenseFeatures:
        """All intermediate maps distillation needs, plus the head outputs."""
        x_conv5 = self.conv5(x_conv4)                  # from the pre-CMA F^l (authors' code)
        a1 = a2 = None
        x = x_conv4
        if self.cma is not None:
            a1, a2 = self.cma(x_conv4)
            x = a2
        h1, h2 = self.dense_enc(x, x_conv5)
        return DenseFeatures(a1, a2, h1, h2, self.head(h2))

    def forward(self, x_conv4: Tensor) -> HeadOutput:
        return self.features(x_conv4).head


class FlatDensePart(nn.Module):
    """Export wrapper: x_conv4 -> flat tuple of head maps (``head_output_names()`` order)."""

    def __init__(self, dense: DensePart):
        super().__init__()
        self.dense = dense

    def forward(self, x_conv4: Tensor) -> tuple[Tensor, ...]:
        return flatten_head(self.dense(x_conv4))


@dataclass
class DetectorOutput:
    """Full forward: x_conv4 = F^l (B, C4, H, W), F^{a(1)}, F^{a(2)} (None without CMA),
    F^{h(1)}, F^{h(2)} (B, Cd, H, W), and the head outputs (docs/architecture.md)."""

    x_conv4: Tensor
    aligned1: Tensor | None
    aligned2: Tensor | None
    high1: Tensor
    high2: Tensor
    head: HeadOutput


class PillarNetDetector(nn.Module):
    """PillarNet-18 (+ CMA for the radar student): points (N, 1 + F) -> :class:`DetectorOutput`."""

    def __init__(self, cfg: Config, modality: Modality):
        super().__init__()
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
        self.modality = modality
        self.point_features = POINT_FEATURES[modality]
        self.front_end = PillarFrontEnd(cfg.grid, cfg.model, len(self.point_features))
        self.dense = DensePart(cfg.model, use_cma=modality == "radar" and cfg.model.cma.enabled)

    def forward(self, points: Tensor, batch_size: int) -> DetectorOutput:
        x_conv4 = self.front_end(points, batch_size)
        f = self.dense.features(x_conv4)
        return DetectorOutput(x_conv4, f.aligned1, f.aligned2, f.high1, f.high2, f.head)


def build_model(cfg: Config, modality: Modality) -> PillarNetDetector:
    """Teacher (``"lidar"``, no CMA) or student (``"radar"``) for a config variant."""
    return PillarNetDetector(cfg, modality)
