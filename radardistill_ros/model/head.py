"""CenterHead (CenterPoint with IoU branch): H^cls, H^reg, H^IoU = CenterHead(F^h).

Shared Conv3x3 (Cin -> shared) + BN + ReLU, then one branch per task group of
``conventions.TASKS``. Each branch outputs the maps of ``docs/architecture.md`` ("Head
outputs"), in :data:`HEAD_KEYS` order: hm (K_t), center 2, center_z 1, dim 3, rot 2, vel 2, iou 1.

* ``shared_per_task=False`` (published): per output Conv3x3 + BN + ReLU, Conv3x3 -> out.
* ``shared_per_task=True`` (light): per task one Conv3x3 + BN + ReLU, then Conv1x1 per output.

Heatmap output bias is initialised to -2.19 (prior ~0.1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from radardistill_ros.conventions import TASKS
from radardistill_ros.model.backbone import bn2d

#: Output keys of every task, in order (also the ONNX flattening order within a task).
HEAD_KEYS: tuple[str, ...] = ("hm", "center", "center_z", "dim", "rot", "vel", "iou")
#: Channels of the non-heatmap outputs.
REG_CHANNELS: dict[str, int] = {"center": 2, "center_z": 1, "dim": 3, "rot": 2, "vel": 2, "iou": 1}
HM_BIAS_INIT = -2.19

HeadOutput = list[dict[str, Tensor]]


def head_output_names(tasks: Sequence[Sequence[str]] = TASKS) -> list[str]:
    """Flattened output names ``task{t}.{key}`` in the documented order (tasks, then keys)."""
    return [f"task{t}.{k}" for t in range(len(tasks)) for k in HEAD_KEYS]


def flatten_head(out: HeadOutput) -> tuple[Tensor, ...]:
    """List of per-task dicts -> flat tuple in :func:`head_output_names` order."""
    return tuple(task[k] for task in out for k in HEAD_KEYS)


def unflatten_head(flat: Sequence[Tensor], num_tasks: int = len(TASKS)) -> HeadOutput:
    """Inverse of :func:`flatten_head`."""
    n = len(HEAD_KEYS)
    if len(flat) != n * num_tasks:
        raise ValueError(f"expected {n * num_tasks} head maps, got {len(flat)}")
    return [dict(zip(HEAD_KEYS, flat[t * n:(t + 1) * n])) for t in range(num_tasks)]


def _out_conv(cin: int, cout: int, k: int, key: str) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, k, 1, k // 2, bias=True)
    if key == "hm":
        nn.init.constant_(conv.bias, HM_BIAS_INIT)
    else:
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(conv.bias)
    return conv


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), bn2d(cout), nn.ReLU(inplace=True))


class TaskHead(nn.Module):
    """One task group: (B, S, H, W) -> {key: (B, C_key, H, W)}."""

    def __init__(self, in_channels: int, head_channels: int, num_classes: int, shared_per_task: bool):
        super().__init__()
        self.shared_per_task = shared_per_task
        outs = {"hm": num_classes, **REG_CHANNELS}
        if shared_per_task:
            self.shared = _conv_bn_relu(in_channels, head_channels)
            self.outputs = nn.ModuleDict({k: _out_conv(head_channels, c, 1, k) for k, c in outs.items()})
        else:
            self.outputs = nn.ModuleDict({
                k: nn.Sequential(_conv_bn_relu(in_channels, head_channels), _out_conv(head_channels, c, 3, k))
                for k, c in outs.items()})

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if self.shared_per_task:
            x = self.shared(x)
        return {k: self.outputs[k](x) for k in HEAD_KEYS}


class CenterHead(nn.Module):
    """F^h (B, Cin, H, W) -> head outputs: list over ``tasks`` of {key: (B, C, H, W)}."""

    def __init__(self, in_channels: int, shared_channels: int, head_channels: int, shared_per_task: bool,
                 tasks: Sequence[Sequence[str]] = TASKS):
        super().__init__()
        self.tasks = tuple(tuple(t) for t in tasks)
        self.shared = _conv_bn_relu(in_channels, shared_channels)
        self.task_heads = nn.ModuleList(
            TaskHead(shared_channels, head_channels, len(t), shared_per_task) for t in self.tasks)

    def forward(self, x: Tensor) -> HeadOutput:
        x = self.shared(x)
        return [h(x) for h in self.task_heads]


def heatmap_probs(out: HeadOutput) -> Tensor:
    """All classes' heatmap probabilities concatenated over tasks: (B, 10, H, W)."""
    return torch.sigmoid(torch.cat([t["hm"] for t in out], dim=1))
