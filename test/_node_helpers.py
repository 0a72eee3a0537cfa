"""Helpers of the node / replay tests: a tiny model, a synthetic bag, the node as a process."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import yaml

from radardistill_ros.config import Config, config_from_dict, load_config
from radardistill_ros.model import build_model, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config" / "detector.yaml"


def tiny_config() -> Config:
    """The lite variant shrunk for tests: +-54 m on a 24 x 24 BEV (4.5 m cells), 8-16 channels,
    3 sweeps per radar. Same structure (front end, CMA, DenseEnc, CenterHead with all tasks)."""
    d = copy.deepcopy(load_config("lite").to_dict())
    d["name"] = "tiny_test"
    d["grid"]["pillar_size"] = [0.5625, 0.5625]       # 192 x 192 pillars
    d["data"]["radar_sweeps"] = 3
    m = d["model"]
    m["vfe_channels"] = 8
    m["backbone_channels"] = [8, 16, 16, 16]
    m["cma"]["channels"] = 16
    m["dense_enc"]["channels"] = 16
    m["dense_enc"]["conv5_layers"] = 1
    m["dense_enc"]["fuse_layers"] = 1
    m["head"]["shared_channels"] = 16
    m["head"]["head_channels"] = 16
    return config_from_dict(d)


def make_checkpoint(path: Path, seed: int = 0, hm_bias: float = -5.0, cfg: Config | None = None) -> Path:
    """A random-weight radar student of ``cfg`` (default :func:`tiny_config`) saved as a checkpoint
    (the config travels inside it).

    A fresh initialisation (BatchNorm running statistics 0 / 1) scores every cell about the same,
    so its detections would not depend on the input. The BatchNorm statistics are therefore
    calibrated on random radar-like frames (a few forward passes in train mode): the
    activations then keep their spread through the network and the boxes follow the points.
    """
    torch.manual_seed(seed)
    cfg = cfg if cfg is not None else tiny_config()
    model = build_model(cfg, "radar")
    gen = torch.Generator().manual_seed(seed)
    for mod in model.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.reset_running_stats()
            mod.momentum = None  # cumulative average over the calibration passes
    model.train()
    with torch.no_grad():
        for _ in range(4):
            n = 600
            pts = torch.zeros((n, 7))
            pts[:, 1:3] = torch.rand((n, 2), generator=gen) * 100.0 - 50.0
            pts[:, 3] = torch.rand(n, generator=gen) * 2.0 - 0.5
            pts[:, 4:] = torch.randn((n, 3), generator=gen) * 3.0
            model(pts, 1)
        for name, mod in model.dense.head.named_modules():
            if name.endswith("outputs.hm"):  # the output conv (last module of a published-head branch)
                conv = mod[-1] if isinstance(mod, torch.nn.Sequential) else mod
                conv.bias.fill_(hm_bias)
    model.eval()
    save_checkpoint(path, model, cfg, "radar")
    return path


def write_params(path: Path, **overrides: object) -> Path:
    """config/detector.yaml with ``overrides`` applied, written to ``path``."""
    data = yaml.safe_load(CONFIG.read_text())
    data["/**"]["ros__parameters"].update(overrides)
    path.write_text(yaml.safe_dump(data))
    return path


def radar_cloud_array(n: int = 60, seed: int = 0):
    """``n`` radar points in the packed nuScenes layout (43 bytes a point), 5-45 m ahead."""
    import numpy as np

    from radardistill_ros.conventions import NUSCENES_RADAR_FIELDS

    rng = np.random.default_rng(seed)
    arr = np.zeros(n, np.dtype(list(NUSCENES_RADAR_FIELDS)))
    arr["x"] = rng.uniform(5.0, 45.0, n)
    arr["y"] = rng.uniform(-15.0, 15.0, n)
    arr["z"] = rng.uniform(-0.5, 1.0, n)
    arr["rcs"] = rng.uniform(-5.0, 20.0, n)
    arr["vx_comp"] = rng.normal(0.0, 3.0, n)
    arr["vy_comp"] = rng.normal(0.0, 1.0, n)
    return arr


def tf_message(stamp_ns: int, parent: str, child: str, xyz=(0.0, 0.0, 0.0)):
    """tf2_msgs/TFMessage (rclpy) with one transform ``parent -> child`` (no rotation)."""
    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage

    t = TransformStamped()
    t.header.stamp.sec, t.header.stamp.nanosec = divmod(int(stamp_ns), 1_000_000_000)
    t.header.frame_id, t.child_frame_id = parent, child
    t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = map(float, xyz)
    t.transform.rotation.w = 1.0
    return TFMessage(transforms=[t])
