"""Decoding head outputs: a hand-computed peak, rectified score, threshold, range, NMS, labels."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from radardistill_ros.config import GridConfig, PostConfig
from radardistill_ros.conventions import CLASS_NAMES, TASKS
from radardistill_ros.decode import (
    HEAD_KEYS,
    _window_max,
    decode,
    gather_cells,
    head_regression,
    regression_to_boxes,
)

# 9.6 m square, 0.3 m pillars, stride 2 -> 16 x 16 BEV, 0.6 m cells, x_min = y_min = -4.8
GRID = GridConfig(point_cloud_range=(-4.8, -4.8, -5.0, 4.8, 4.8, 3.0), pillar_size=(0.3, 0.3), out_stride=2)
POST = PostConfig(post_center_range=(-6.0, -6.0, -5.0, 6.0, 6.0, 3.0))
H = W = 16


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def empty_heads(batch: int = 1) -> list[dict[str, torch.Tensor]]:
    heads = []
    for names in TASKS:
        heads.append({
            "hm": torch.full((batch, len(names), H, W), -12.0),
            "center": torch.full((batch, 2, H, W), 0.5),
            "center_z": torch.zeros(batch, 1, H, W),
            "dim": torch.zeros(batch, 3, H, W),
            "rot": torch.cat((torch.ones(batch, 1, H, W), torch.zeros(batch, 1, H, W)), dim=1),
            "vel": torch.zeros(batch, 2, H, W),
            "iou": torch.ones(batch, 1, H, W),
        })
    return heads


def put_peak(heads, task: int, cls: int, iy: int, ix: int, hm: float, iou_pred: float, reg: list[float],
             b: int = 0) -> None:
    """reg = dx, dy, z, log l, log w, log h, cos, sin, vx, vy at cell (iy, ix)."""
    h = heads[task]
    h["hm"][b, cls, iy, ix] = logit(hm)
    h["iou"][b, 0, iy, ix] = iou_pred
    for key, sl in (("center", slice(0, 2)), ("center_z", slice(2, 3)), ("dim", slice(3, 6)),
                    ("rot", slice(6, 8)), ("vel", slice(8, 10))):
        h[key][b, :, iy, ix] = torch.tensor(reg[sl])


REG = [0.25, 0.5, 0.7, math.log(4.5), math.log(2.0), math.log(1.6),
       2 * math.cos(0.3), 2 * math.sin(0.3), 1.5, -0.5]


def test_single_peak_decodes_by_hand() -> None:
    heads = empty_heads()
    # task 1 = (truck, construction_vehicle); class 1 -> construction_vehicle
    put_peak(heads, task=1, cls=1, iy=5, ix=7, hm=0.64, iou_pred=-0.02, reg=REG)
    det = decode(heads, GRID, POST)
    assert len(det) == 1
    boxes, scores, labels = det[0]
    assert boxes.shape == (1, 9) and boxes.dtype == torch.float32 and labels.dtype == torch.int64
    # x = -4.8 + (7 + 0.25) * 0.6 = -0.45; y = -4.8 + (5 + 0.5) * 0.6 = -1.5; yaw = atan2(2 sin, 2 cos) = 0.3
    np.testing.assert_allclose(boxes[0].numpy(), [-0.45, -1.5, 0.7, 4.5, 2.0, 1.6, 0.3, 1.5, -0.5],
                               rtol=1e-5, atol=1e-5)
    # iou = (-0.02 + 1) / 2 = 0.49; score = 0.64^0.5 * 0.49^0.5 = 0.8 * 0.7 = 0.56
    assert scores[0].item() == pytest.approx(0.56, abs=1e-5)
    assert labels.tolist() == [CLASS_NAMES.index("construction_vehicle")]
    # r = 0: the score is the heatmap probability alone
    det0 = decode(heads, GRID, PostConfig(iou_rectifier=0.0, post_center_range=POST.post_center_range))
    assert det0[0].scores[0].item() == pytest.approx(0.64, abs=1e-5)


def test_numpy_and_flat_inputs() -> None:
    heads = empty_heads()
    put_peak(heads, task=0, cls=0, iy=8, ix=8, hm=0.9, iou_pred=0.6, reg=REG)
    ref = decode(heads, GRID, POST)[0]
    as_np = [{k: v.numpy() for k, v in h.items()} for h in heads]
    out = decode(as_np, GRID, POST)[0]
    assert isinstance(out.boxes, np.ndarray) and out.boxes.dtype == np.float32
    assert out.labels.dtype == np.int64
    np.testing.assert_allclose(out.boxes, ref.boxes.numpy())
    flat = [h[k].numpy() for h in heads for k in HEAD_KEYS]  # ONNX output order
    out_flat = decode(flat, GRID, POST)[0]
    np.testing.assert_allclose(out_flat.scores, ref.scores.numpy())
    # score = sqrt(0.9 * 0.8)
    assert out.scores[0] == pytest.approx(math.sqrt(0.9 * 0.8), abs=1e-5)


def test_score_threshold_and_post_center_range() -> None:
    heads = empty_heads()
    put_peak(heads, 0, 0, 2, 2, hm=0.3, iou_pred=-0.9, reg=REG)    # score sqrt(0.3 * 0.05) = 0.12 kept
    put_peak(heads, 0, 0, 2, 12, hm=0.3, iou_pred=-0.95, reg=REG)  # sqrt(0.3 * 0.025) = 0.087 dropped
    high_z = REG.copy()
    high_z[2] = 3.5                                                 # z above the range max 3.0
    put_peak(heads, 0, 0, 12, 2, hm=0.9, iou_pred=1.0, reg=high_z)
    out = decode(heads, GRID, POST)[0]
    assert len(out.scores) == 1 and out.scores[0].item() == pytest.approx(math.sqrt(0.015), abs=1e-5)
    # a narrower x range removes the remaining box (x = -4.8 + 2.25 * 0.6 = -3.45)
    narrow = PostConfig(post_center_range=(-3.0, -6.0, -5.0, 6.0, 6.0, 3.0))
    assert len(decode(heads, GRID, narrow)[0].scores) == 0
    # a lower threshold lets the second one through
    low = PostConfig(score_threshold=0.05, post_center_range=POST.post_center_range)
    assert len(decode(heads, GRID, low)[0].scores) == 2


def test_tasks_map_to_global_labels_and_nms_per_task() -> None:
    heads = empty_heads(batch=2)
    expected = []
    for t, names in enumerate(TASKS):  # last class of every task, in distinct cells of sample 0
        put_peak(heads, t, len(names) - 1, iy=2 + 2 * t, ix=3, hm=0.5 + 0.05 * t, iou_pred=1.0, reg=REG)
        expected.append(CLASS_NAMES.index(names[-1]))
    # two overlapping car peaks in adjacent cells: NMS keeps the higher one only
    put_peak(heads, 0, 0, 12, 12, hm=0.9, iou_pred=1.0, reg=REG)
    put_peak(heads, 0, 0, 12, 13, hm=0.8, iou_pred=1.0, reg=REG)
    # a bus (task 2) on top of the car: another task, not suppressed
    put_peak(heads, 2, 0, 12, 12, hm=0.7, iou_pred=1.0, reg=REG)
    out = decode(heads, GRID, POST)
    labels = out[0].labels.tolist()
    car, bus = CLASS_NAMES.index("car"), CLASS_NAMES.index("bus")
    assert sorted(labels) == sorted([*expected, car, bus])
    assert labels.count(car) == 2  # the task-0 peak at (2, 3) and the best of the overlapping pair
    car_scores = out[0].scores[out[0].labels == car]
    assert car_scores.tolist() == pytest.approx([0.9**0.5, 0.5**0.5], abs=1e-5)  # sorted by score
    assert len(out[1].scores) == 0 and out[1].boxes.shape == (0, 9)


def test_nms_post_max_per_task() -> None:
    heads = empty_heads()
    unit = [0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]  # 1 m cubes at cell centres
    for i in range(6):  # six disjoint cars
        put_peak(heads, 0, 0, 2 + 2 * i, 2 + 2 * i, hm=0.5 + 0.05 * i, iou_pred=1.0, reg=unit)
    post = PostConfig(nms_post_max=4, post_center_range=POST.post_center_range)
    out = decode(heads, GRID, post)[0]
    assert len(out.scores) == 4 and out.scores.tolist() == sorted(out.scores.tolist(), reverse=True)


def test_regression_to_boxes_matches_decode_and_gathers() -> None:
    heads = empty_heads()
    put_peak(heads, 3, 0, 9, 4, hm=0.7, iou_pred=1.0, reg=REG)
    ind = torch.tensor([[9 * W + 4]])
    reg = gather_cells(head_regression(heads[3]), ind)
    assert reg.shape == (1, 1, 10)
    np.testing.assert_allclose(reg[0, 0].numpy(), REG, rtol=1e-6)
    boxes = regression_to_boxes(reg, ind, GRID)
    out = decode(heads, GRID, POST)[0]
    np.testing.assert_allclose(boxes[0].numpy(), out.boxes.numpy(), rtol=1e-6)
    assert out.labels.tolist() == [CLASS_NAMES.index("barrier")]


def test_peak_extraction_keeps_one_candidate_per_blob() -> None:
    # a 3 x 3 car blob (centre 0.8, ring 0.6) and a lone weaker car peak 4 cells away
    heads = empty_heads()
    unit = [0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]  # 1 m cubes at cell centres
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            put_peak(heads, 0, 0, 8 + dy, 8 + dx, hm=0.8 if dy == dx == 0 else 0.6, iou_pred=1.0, reg=unit)
    put_peak(heads, 0, 0, 8, 12, hm=0.3, iou_pred=1.0, reg=unit)
    post = dataclasses.replace(POST, nms_iou_threshold=0.99)  # NMS out of the way (cubes do not overlap)
    peaks = decode(heads, GRID, dataclasses.replace(post, peak_kernel=3))[0]
    # the blob's centre and the lone peak; cell (iy, ix) -> x = -4.8 + (ix + 0.5) * 0.6
    assert peaks.scores.tolist() == pytest.approx([0.8**0.5, 0.3**0.5], abs=1e-6)
    assert peaks.boxes[:, 0].tolist() == pytest.approx([-4.8 + 8.5 * 0.6, -4.8 + 12.5 * 0.6], abs=1e-5)
    every_cell = decode(heads, GRID, dataclasses.replace(post, peak_kernel=0))[0]
    assert len(every_cell.scores) == 10
    # a plateau (equal neighbours) keeps every maximal cell: ties are not broken arbitrarily
    heads = empty_heads()
    put_peak(heads, 0, 0, 5, 5, hm=0.7, iou_pred=1.0, reg=unit)
    put_peak(heads, 0, 0, 5, 6, hm=0.7, iou_pred=1.0, reg=unit)
    assert len(decode(heads, GRID, dataclasses.replace(post, peak_kernel=3))[0].scores) == 2


def test_window_max_equals_max_pool() -> None:
    x = torch.randn(2, 3, 11, 9, generator=torch.Generator().manual_seed(0))
    for k in (3, 5):
        ref = torch.nn.functional.max_pool2d(x, k, stride=1, padding=k // 2)
        assert torch.equal(_window_max(x, k), ref)


def test_batched_decode_equals_per_sample() -> None:
    gen = torch.Generator().manual_seed(1)
    heads = empty_heads(batch=3)
    for b in range(3):
        for t in range(len(TASKS)):
            heads[t]["hm"][b] = torch.randn(heads[t]["hm"].shape[1:], generator=gen) * 2 - 2
    out = decode(heads, GRID, POST)
    for b in range(3):
        single = decode([{k: v[b:b + 1] for k, v in h.items()} for h in heads], GRID, POST)[0]
        assert len(single.scores) > 0
        for x, y in zip(out[b], single):
            assert torch.equal(x, y)


def test_nms_pre_max_caps_candidates_per_task_before_boxes() -> None:
    heads = empty_heads(batch=2)
    unit = [0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]  # 1 m cubes at cell centres
    for b in range(2):
        for i in range(6):  # six disjoint cars per sample
            put_peak(heads, 0, 0, 2 + 2 * i, 2 + 2 * i, hm=0.5 + 0.05 * i, iou_pred=1.0, reg=unit, b=b)
        put_peak(heads, 2, 0, 14, 2, hm=0.3, iou_pred=1.0, reg=unit, b=b)  # a bus: another task
    post = dataclasses.replace(POST, nms_pre_max=3)
    for det in decode(heads, GRID, post):
        car, bus = CLASS_NAMES.index("car"), CLASS_NAMES.index("bus")
        assert det.labels.tolist().count(car) == 3 and det.labels.tolist().count(bus) == 1
        cars = det.scores[det.labels == car].tolist()
        assert cars == pytest.approx([0.75**0.5, 0.7**0.5, 0.65**0.5], abs=1e-6)  # the three best


def random_heads(gen: torch.Generator, batch: int, with_iou: bool = True) -> list[dict[str, torch.Tensor]]:
    heads = []
    for names in TASKS:
        h = {"hm": torch.randn(batch, len(names), H, W, generator=gen) * 2.5 - 2.0,
             "center": torch.rand(batch, 2, H, W, generator=gen),
             "center_z": torch.randn(batch, 1, H, W, generator=gen),
             "dim": torch.randn(batch, 3, H, W, generator=gen) * 0.5 + 0.5,
             "rot": torch.randn(batch, 2, H, W, generator=gen),
             "vel": torch.randn(batch, 2, H, W, generator=gen)}
        if with_iou:
            h["iou"] = torch.rand(batch, 1, H, W, generator=gen) * 2.4 - 1.2  # also outside [-1, 1]
        heads.append(h)
    return heads


@pytest.mark.parametrize("peak_kernel", [1, 3, 5])
@pytest.mark.parametrize("with_iou", [True, False])
def test_compiled_decode_equals_torch_decode(peak_kernel: int, with_iou: bool) -> None:
    gen = torch.Generator().manual_seed(10 * peak_kernel + with_iou)
    for trial, pre_max in enumerate((1000, 7)):
        heads = random_heads(gen, batch=2, with_iou=with_iou)
        post = dataclasses.replace(POST, peak_kernel=peak_kernel, nms_pre_max=pre_max, nms_post_max=9)
        ref = decode(heads, GRID, post, impl="torch")
        got = decode(heads, GRID, post, impl="compiled")
        auto = decode(heads, GRID, post)  # auto = compiled on CPU
        assert all(torch.equal(x, y) for a, b in zip(auto, got) for x, y in zip(a, b))
        assert sum(len(d.scores) for d in ref) > 10
        for r, g in zip(ref, got):
            assert g.labels.tolist() == r.labels.tolist(), (trial, pre_max)
            torch.testing.assert_close(g.scores, r.scores, atol=1e-6, rtol=1e-6)
            torch.testing.assert_close(g.boxes, r.boxes, atol=1e-5, rtol=1e-6)
        # numpy (ONNX Runtime) inputs
        np_heads = [{k: v.numpy() for k, v in h.items()} for h in heads]
        for r, g in zip(ref, decode(np_heads, GRID, post)):
            assert isinstance(g.boxes, np.ndarray) and g.labels.tolist() == r.labels.tolist()


def test_compiled_decode_nan_maps_and_errors() -> None:
    heads = empty_heads()
    put_peak(heads, 0, 0, 5, 5, hm=0.9, iou_pred=1.0, reg=REG)
    put_peak(heads, 0, 0, 12, 12, hm=0.8, iou_pred=1.0, reg=REG)
    heads[0]["hm"][0, 0, 6, 6] = float("nan")  # in the window of the first peak only
    post = dataclasses.replace(POST, peak_kernel=3)
    for impl in ("torch", "compiled"):
        det = decode(heads, GRID, post, impl=impl)[0]
        assert det.scores.tolist() == pytest.approx([0.8 ** 0.5], abs=1e-6)  # NaN in its window: no peak
        det = decode(heads, GRID, POST, impl=impl)[0]  # no peak test: both peaks
        assert det.scores.tolist() == pytest.approx([0.9 ** 0.5, 0.8 ** 0.5], abs=1e-6)
    with pytest.raises(ValueError, match="impl must be one of"):
        decode(heads, GRID, POST, impl="numba")


def test_compiled_kernels_warm_up() -> None:
    from radardistill_ros import decode_cpu

    decode_cpu.warm_up(len(TASKS) * 5)  # compiles (or loads) every kernel; self-checks the candidates
    with pytest.raises(ValueError, match="whole number of tasks"):
        idx = np.zeros(1, np.int64)
        decode_cpu.gather_regression([np.zeros((1, 1, 2, 2), np.float32)] * 3, 2, idx, idx, idx)
