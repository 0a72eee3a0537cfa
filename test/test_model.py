"""Full detector: paper sizes and shapes, head contract, lite train step, checkpoints."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from radardistill_ros.config import Config, ConfigError, config_from_dict, load_config
from radardistill_ros.conventions import TASKS
from radardistill_ros.model import (
    HEAD_KEYS,
    CheckpointError,
    FlatDensePart,
    build_model,
    flatten_head,
    head_output_names,
    load_checkpoint,
    save_checkpoint,
    unflatten_head,
)
from radardistill_ros.model.cma import CMA
from radardistill_ros.model.detector import DensePart, PillarFrontEnd
from radardistill_ros.model.head import HM_BIAS_INIT

REG_CH = {"center": 2, "center_z": 1, "dim": 3, "rot": 2, "vel": 2, "iou": 1}


def radar_points(n: int, batch: int, half: float, seed: int = 0) -> torch.Tensor:
    """(n, 7) [b, x, y, z, rcs, vx, vy] spread over +-half m."""
    g = torch.Generator().manual_seed(seed)
    pts = torch.empty(n, 7)
    pts[:, 0] = torch.randint(0, batch, (n,), generator=g).float()
    pts[:, 1:3] = (torch.rand(n, 2, generator=g) * 2 - 1) * half
    pts[:, 3] = torch.rand(n, generator=g) * 2 - 0.5
    pts[:, 4:] = torch.randn(n, 3, generator=g) * 3
    return pts


def count(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def check_head(head: list[dict[str, torch.Tensor]], batch: int, hw: tuple[int, int]) -> None:
    assert len(head) == len(TASKS)
    for t, task in enumerate(head):
        assert tuple(task) == HEAD_KEYS
        assert task["hm"].shape == (batch, len(TASKS[t]), *hw)
        for k, c in REG_CH.items():
            assert task[k].shape == (batch, c, *hw), (t, k)


def shrink(cfg: Config, half: float) -> Config:
    """``cfg`` with the x/y range cut to +-half m (same pillars and layers): cheap test inputs."""
    r = cfg.grid.point_cloud_range
    grid = dataclasses.replace(cfg.grid, point_cloud_range=(-half, -half, r[2], half, half, r[5]))
    return dataclasses.replace(cfg, grid=grid)


@pytest.fixture(scope="module")
def lite() -> Config:
    cfg = load_config("lite")
    assert cfg.grid.bev_shape == (48, 48) and cfg.grid.cell_size == (2.25, 2.25)
    return shrink(cfg, 13.5)                       # 96^2 pillars, BEV 12 x 12


def test_paper_parameter_counts() -> None:
    cfg = load_config("paper")
    with torch.device("meta"):
        student, teacher = build_model(cfg, "radar"), build_model(cfg, "lidar")
    n_cma, n_all = count(student.dense.cma), count(student)
    print(f"paper: CMA {n_cma:,} params, radar student {n_all:,}, LiDAR teacher {count(teacher):,}, "
          f"front end {count(student.front_end):,}, dense part {count(student.dense):,}")
    assert abs(n_cma - 8.75e6) / 8.75e6 < 0.01            # digest: CMA ~8.75 M
    assert abs(n_all - 25e6) / 25e6 < 0.03                 # digest: whole radar student ~25 M
    assert teacher.dense.cma is None and n_all - count(teacher) == n_cma + 32   # + 1 VFE input column


def test_paper_shapes() -> None:
    """Front end on the real 1440^2 pillar grid; the dense part's 180x180 maps on the meta device."""
    cfg = load_config("paper")
    assert cfg.grid.pillar_grid == (1440, 1440) and cfg.grid.bev_shape == (180, 180)
    torch.manual_seed(0)
    front = PillarFrontEnd(cfg.grid, cfg.model, 6).eval()
    with torch.no_grad():
        x4 = front(radar_points(200, 1, 54.0), 1)
    assert x4.shape == (1, 256, 180, 180)
    with torch.device("meta"):
        dense = DensePart(cfg.model, use_cma=True)
        f = dense.features(torch.empty(1, 256, 180, 180))
    assert f.aligned1.shape == f.aligned2.shape == (1, 256, 180, 180)
    assert f.high1.shape == f.high2.shape == (1, 256, 180, 180)
    check_head(f.head, 1, (180, 180))


def test_head_contract_names_and_init(lite: Config) -> None:
    names = head_output_names()
    assert len(names) == 7 * len(TASKS) and names[:2] == ["task0.hm", "task0.center"]
    assert names[-1] == f"task{len(TASKS) - 1}.iou"
    torch.manual_seed(0)
    m = build_model(lite, "radar").eval()
    for th in m.dense.head.task_heads:
        bias = th.outputs["hm"].bias
        torch.testing.assert_close(bias, torch.full_like(bias, HM_BIAS_INIT))
    x4 = torch.randn(1, lite.model.backbone_channels[3], 16, 16)
    with torch.no_grad():
        flat = FlatDensePart(m.dense)(x4)
        head = m.dense(x4)
    assert len(flat) == len(names)
    for a, b in zip(flat, flatten_head(head)):
        torch.testing.assert_close(a, b)
    back = unflatten_head(flat)
    assert [list(t) for t in back] == [list(HEAD_KEYS)] * len(TASKS)


def test_lite_forward_backward(lite: Config) -> None:
    torch.manual_seed(0)
    m = build_model(lite, "radar").train()
    out = m(radar_points(400, 2, 13.5), 2)
    c4 = lite.model.backbone_channels[3]
    assert out.x_conv4.shape == (2, c4, 12, 12)
    assert out.aligned1.shape == out.aligned2.shape == (2, c4, 12, 12)
    assert out.high1.shape == out.high2.shape == (2, lite.model.dense_enc.channels, 12, 12)
    check_head(out.head, 2, (12, 12))
    loss = sum(v.square().mean() for t in out.head for v in t.values())
    loss = loss + out.aligned1.mean() + out.high1.mean()
    loss.backward()
    no_grad = [n for n, p in m.named_parameters() if p.grad is None]
    assert not no_grad, no_grad
    for name in ("front_end.vfe.linear.weight", "front_end.encoder.stages.0.0.conv1.weight",
                 "dense.cma.down1.dcn.weight", "dense.cma.down1.dcn.conv_offset_mask.weight"):
        assert dict(m.named_parameters())[name].grad.abs().sum() > 0, name


def test_teacher_is_same_class_without_cma(lite: Config) -> None:
    torch.manual_seed(0)
    t = build_model(lite, "lidar").eval()
    assert type(t) is type(build_model(lite, "radar"))
    assert t.front_end.vfe.in_channels == 14 and t.dense.cma is None
    pts = torch.cat((radar_points(300, 1, 13.5)[:, :5], torch.zeros(300, 1)), dim=1)   # x y z i t
    with torch.no_grad():
        out = t(pts, 1)
    assert out.aligned1 is None and out.aligned2 is None
    check_head(out.head, 1, (12, 12))


def test_x_conv5_comes_from_pre_cma_x_conv4(lite: Config) -> None:
    torch.manual_seed(0)
    d = build_model(lite, "radar").dense.eval()
    x4 = torch.randn(1, lite.model.backbone_channels[3], 16, 16)
    with torch.no_grad():
        f = d.features(x4)
        h1 = d.dense_enc.deblock(d.dense_enc.block5(d.conv5(x4)))
        cma_in = d.cma(x4)
    torch.testing.assert_close(f.high1, h1)
    torch.testing.assert_close(f.aligned2, cma_in.aligned2)


def test_cma_handles_odd_sizes() -> None:
    torch.manual_seed(0)
    cma = CMA(8, 2, 1).eval()
    with torch.no_grad():
        a1, a2 = cma(torch.randn(1, 8, 45, 23))
    assert a1.shape == a2.shape == (1, 8, 45, 23)


def test_empty_cloud_in_eval(lite: Config) -> None:
    m = build_model(lite, "radar").eval()
    with torch.no_grad():
        out = m(torch.zeros(0, 7), 1)
    assert out.x_conv4.abs().sum() == 0
    assert all(torch.isfinite(v).all() for t in out.head for v in t.values())


def test_checkpoint_round_trip_and_refusals(lite: Config, tmp_path) -> None:
    torch.manual_seed(0)
    m = build_model(lite, "radar").eval()
    path = tmp_path / "student.pt"
    save_checkpoint(path, m, lite, "radar", extra={"epoch": 3})
    loaded, cfg = load_checkpoint(path, lite, "radar")
    assert cfg == lite and not loaded.training
    pts = radar_points(300, 1, 13.5)
    with torch.no_grad():
        a, b = m(pts, 1), loaded(pts, 1)
    for x, y in zip(flatten_head(a.head), flatten_head(b.head)):
        torch.testing.assert_close(x, y)
    other = dataclasses.replace(lite, model=dataclasses.replace(
        lite.model, head=dataclasses.replace(lite.model.head, head_channels=16)))
    with pytest.raises(CheckpointError, match="digest mismatch"):
        load_checkpoint(path, other)
    with pytest.raises(CheckpointError, match="digest mismatch"):
        load_checkpoint(path, load_config("paper"))
    with pytest.raises(CheckpointError, match="modality"):
        load_checkpoint(path, lite, "lidar")
    # decoding and training settings are not part of the digest: the requested config is returned
    post = dataclasses.replace(lite.post, score_threshold=0.3, peak_kernel=0)
    serving = dataclasses.replace(lite, post=post)
    _, cfg = load_checkpoint(path, serving, "radar")
    assert cfg is serving and cfg.post.score_threshold == 0.3


def test_model_config_validation(lite: Config) -> None:
    d = lite.to_dict()
    d["model"]["cma"]["channels"] = lite.model.backbone_channels[3] + 8
    with pytest.raises(ConfigError, match=r"cma\.channels"):
        config_from_dict(d)
    d = lite.to_dict()
    d["model"]["cma"].pop("down_blocks")
    with pytest.raises(ConfigError, match="down_blocks"):
        config_from_dict(d)
