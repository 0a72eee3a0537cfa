"""Rotated BEV / 3D IoU, DIoU and rotated NMS: hand cases, shapely reference, properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from shapely.geometry import Polygon

from radardistill_ros.box_ops import (
    bev_intersection_aligned,
    box_corners_bev,
    diou3d_aligned,
    group_rank,
    iou3d,
    iou3d_aligned,
    iou_bev,
    iou_bev_aligned,
    nms_rotated,
)
from radardistill_ros.decode_cpu import iou_bev_pairs, nms_rotated_cpu

#: both NMS implementations: tensor ops, and the compiled loop used for CPU tensors
NMS_IMPLS = pytest.mark.parametrize("impl", ["torch", "compiled"])


def box(x=0.0, y=0.0, z=0.0, l=2.0, w=2.0, h=2.0, yaw=0.0) -> list[float]:
    return [x, y, z, l, w, h, yaw]


def t(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def random_boxes(n: int, gen: torch.Generator, spread: float = 4.0) -> torch.Tensor:
    b = torch.rand(n, 7, generator=gen)
    b[:, :2] = b[:, :2] * spread
    b[:, 2] = b[:, 2] * 2.0 - 1.0
    b[:, 3:6] = b[:, 3:6] * 4.0 + 0.2
    b[:, 6] = (b[:, 6] - 0.5) * 4 * math.pi
    return b


def shapely_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    pa = Polygon(box_corners_bev(a[None].double())[0].numpy())
    pb = Polygon(box_corners_bev(b[None].double())[0].numpy())
    inter = pa.intersection(pb).area
    return inter / (pa.area + pb.area - inter)


def test_corners_counter_clockwise_and_yaw_ccw() -> None:
    c = box_corners_bev(t(box(l=4.0, w=2.0, yaw=math.pi / 2)))[0]
    # a 4 x 2 box turned by +90 deg points along +y: corners at x = +-1, y = +-2
    np.testing.assert_allclose(c.numpy(), [[1, 2], [-1, 2], [-1, -2], [1, -2]], atol=1e-6)
    x, y = c[:, 0], c[:, 1]
    area = 0.5 * (x * y.roll(-1) - x.roll(-1) * y).sum()
    assert area.item() == pytest.approx(8.0)  # positive: counter-clockwise


def test_identical_boxes_iou_one() -> None:
    b = t(box(1.0, -3.0, 0.5, 4.5, 1.9, 1.6, 0.7), box(50.0, 40.0, 0.0, 0.5, 0.5, 1.0, -2.0))
    np.testing.assert_allclose(iou_bev_aligned(b, b).numpy(), [1.0, 1.0], atol=1e-5)
    np.testing.assert_allclose(iou3d_aligned(b, b).numpy(), [1.0, 1.0], atol=1e-5)
    np.testing.assert_allclose(torch.diagonal(iou_bev(b, b)).numpy(), [1.0, 1.0], atol=1e-5)
    np.testing.assert_allclose(diou3d_aligned(b, b).numpy(), [1.0, 1.0], atol=1e-5)


def test_square_vs_rectangle_rotated_90_deg() -> None:
    # 2 x 2 square vs a 4 x 1 rectangle turned by 90 deg (x in [-0.5, 0.5], y in [-2, 2]):
    # intersection 1 x 2 = 2, union 4 + 4 - 2 = 6 -> IoU 1/3
    sq, rect = t(box(l=2, w=2)), t(box(l=4, w=1, yaw=math.pi / 2))
    assert bev_intersection_aligned(sq, rect).item() == pytest.approx(2.0, abs=1e-5)
    assert iou_bev(sq, rect).item() == pytest.approx(1 / 3, abs=1e-5)
    # the same rectangle unrotated (x in [-2, 2], y in [-0.5, 0.5]) gives the same IoU
    assert iou_bev(sq, t(box(l=4, w=1))).item() == pytest.approx(1 / 3, abs=1e-5)
    # 2 x 2 square vs itself turned by 45 deg: regular octagon of inradius 1,
    # area 8 tan(pi/8); IoU = tan(pi/8) / (1 - tan(pi/8)) = 1 / sqrt(2)
    rot = t(box(yaw=math.pi / 4))
    assert bev_intersection_aligned(sq, rot).item() == pytest.approx(8 * math.tan(math.pi / 8), abs=1e-5)
    assert iou_bev_aligned(sq, rot).item() == pytest.approx(1 / math.sqrt(2), abs=1e-5)


def test_disjoint_and_touching_zero() -> None:
    a = t(box(0, 0), box(0, 0), box(0, 0, yaw=0.3))
    b = t(box(10, 0), box(2, 0), box(0, 5, yaw=1.0))  # far, touching edge, far
    np.testing.assert_allclose(iou_bev_aligned(a, b).numpy(), [0, 0, 0], atol=1e-5)
    assert torch.diagonal(iou_bev(a, b)).abs().max().item() < 1e-5


def test_against_shapely_random() -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = random_boxes(300, gen), random_boxes(300, gen)
    ref = torch.tensor([shapely_iou(a[i], b[i]) for i in range(300)], dtype=torch.float32)
    assert (ref > 0).sum() > 100  # the case exercises real overlaps
    assert (iou_bev_aligned(a, b) - ref).abs().max().item() < 1e-4
    # pairwise matrix, including identical boxes, boxes turned by 90 deg and boxes sharing an edge
    turned = b[:5].clone()
    turned[:, 6] += math.pi / 2
    touching = b[:5].clone()
    touching[:, 0] += touching[:, 3] * torch.cos(touching[:, 6])
    touching[:, 1] += touching[:, 3] * torch.sin(touching[:, 6])
    c = torch.cat((a[:20], b[:5], turned, touching))
    mat = iou_bev(c, b[:20])
    ref_mat = torch.tensor([[shapely_iou(ci, bj) for bj in b[:20]] for ci in c], dtype=torch.float32)
    assert (mat - ref_mat).abs().max().item() < 1e-4


def test_far_from_origin_float32() -> None:
    gen = torch.Generator().manual_seed(1)
    a, b = random_boxes(100, gen, spread=2.0), random_boxes(100, gen, spread=2.0)
    near = iou_bev_aligned(a, b)
    shift = torch.tensor([60.0, -55.0, 0, 0, 0, 0, 0])
    assert (iou_bev_aligned(a + shift, b + shift) - near).abs().max().item() < 1e-4


def test_iou3d_with_z_overlap() -> None:
    # 2 x 2 x 2 boxes, z centres 0 and 1: BEV intersection 4, z overlap 1 -> 4 / (8 + 8 - 4) = 1/3
    a, b = t(box(z=0.0)), t(box(z=1.0))
    assert iou3d_aligned(a, b).item() == pytest.approx(1 / 3, abs=1e-5)
    assert iou3d(a, b).item() == pytest.approx(1 / 3, abs=1e-5)
    # no z overlap -> 0 although the BEV footprints coincide
    assert iou3d_aligned(a, t(box(z=2.5))).item() == 0.0
    # rotated case: BEV IoU 1/3 (square vs rotated rectangle, heights 2 and 1, same z range start)
    sq, rect = t(box(z=1.0, h=2.0)), t(box(l=4, w=1, z=0.5, h=1.0, yaw=math.pi / 2))
    # intersection 2 m^2 x 1 m = 2; union 8 + 4 - 2 = 10
    assert iou3d_aligned(sq, rect).item() == pytest.approx(0.2, abs=1e-5)


def test_diou_hand_cases() -> None:
    # 2 x 2 x 2 boxes shifted by 1 m in x: IoU = 4 / 12; d^2 = 1; enclosing box 3 x 2 x 2 -> c^2 = 17
    a, b = t(box()), t(box(x=1.0))
    assert diou3d_aligned(a, b).item() == pytest.approx(1 / 3 - 1 / 17, abs=1e-5)
    # disjoint unit cubes 2 m apart: IoU 0, d^2 = 4, enclosing 3 x 1 x 1 -> c^2 = 11
    u, v = t(box(l=1, w=1, h=1)), t(box(x=2.0, l=1, w=1, h=1))
    assert diou3d_aligned(u, v).item() == pytest.approx(-4 / 11, abs=1e-5)
    # enclosing box on the rotated corners: a 2 x 2 x 2 box turned 45 deg spans +-sqrt(2) in x and y;
    # a copy 1 m higher: same footprint, z overlap 1 -> IoU 4 / 12 = 1/3; d^2 = 1;
    # enclosing (2 sqrt 2)^2 + (2 sqrt 2)^2 + 3^2 = 25
    r1, r2 = t(box(yaw=math.pi / 4)), t(box(z=1.0, yaw=math.pi / 4))
    assert diou3d_aligned(r1, r2).item() == pytest.approx(1 / 3 - 1 / 25, abs=1e-5)


def test_gradients_finite_including_degenerate_pairs() -> None:
    gen = torch.Generator().manual_seed(2)
    a = random_boxes(64, gen)
    b = torch.cat((random_boxes(60, gen), a[:4].clone()))  # 4 identical pairs (parallel edges)
    a = a.clone().requires_grad_(True)
    (diou3d_aligned(a, b).sum() + iou3d_aligned(a, b).sum()).backward()
    assert torch.isfinite(a.grad).all()
    assert a.grad[:, [0, 1, 3, 4, 6]].abs().sum() > 0


@NMS_IMPLS
def test_nms_suppresses_overlaps_keeps_disjoint_sorted(impl: str) -> None:
    boxes = t(
        box(0.0, 0.0, l=4, w=2),          # 0: score 0.5
        box(0.2, 0.0, l=4, w=2),          # 1: score 0.9, IoU with 0 ~ 0.9 -> suppresses 0
        box(10.0, 0.0, l=4, w=2),         # 2: score 0.3, disjoint -> kept
        box(0.0, 0.0, l=4, w=2, yaw=math.pi / 2),  # 3: score 0.4, IoU with 1 = 4 / (16 - 4) = 1/3
        box(-20.0, 5.0, l=1, w=1),        # 4: score 0.8, disjoint -> kept
    )
    scores = torch.tensor([0.5, 0.9, 0.3, 0.4, 0.8])
    keep = nms_rotated(boxes, scores, iou_threshold=0.2, impl=impl)
    assert keep.tolist() == [1, 4, 2]  # 3 overlaps 1 by IoU 1/3 > 0.2; order by score
    keep = nms_rotated(boxes, scores, iou_threshold=0.5, impl=impl)
    assert keep.tolist() == [1, 4, 3, 2]
    assert nms_rotated(boxes, scores, 0.5, post_max=2, impl=impl).tolist() == [1, 4]
    assert nms_rotated(boxes, scores, 0.5, pre_max=3, impl=impl).tolist() == [1, 4]  # only 1, 4, 0 considered
    assert nms_rotated(boxes[:0], scores[:0], 0.2, impl=impl).numel() == 0


@NMS_IMPLS
def test_nms_matches_naive_greedy(impl: str) -> None:
    gen = torch.Generator().manual_seed(3)
    boxes = random_boxes(150, gen, spread=15.0)
    scores = torch.rand(150, generator=gen)
    iou = iou_bev(boxes, boxes)
    order = scores.argsort(descending=True).tolist()
    naive, removed = [], set()
    for i in order:  # the textbook greedy reference
        if i in removed:
            continue
        naive.append(i)
        removed |= {j for j in order if iou[i, j] > 0.2}
    assert nms_rotated(boxes, scores, 0.2, impl=impl).tolist() == naive
    assert nms_rotated(boxes, scores, 0.2, post_max=10, impl=impl).tolist() == naive[:10]


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="CUDA path of IoU/NMS: this machine has no CUDA device (CPU-only torch)")
def test_cuda_matches_cpu() -> None:
    gen = torch.Generator().manual_seed(4)
    a, b = random_boxes(200, gen), random_boxes(200, gen)
    scores = torch.rand(200, generator=gen)
    torch.testing.assert_close(iou_bev(a.cuda(), b.cuda()).cpu(), iou_bev(a, b), atol=1e-4, rtol=0)
    assert nms_rotated(a.cuda(), scores.cuda(), 0.2).cpu().tolist() == nms_rotated(a, scores, 0.2).tolist()


@NMS_IMPLS
def test_nms_suppression_chain_is_greedy(impl: str) -> None:
    # 1 m cubes every 0.5 m along x, scores descending: neighbours overlap (IoU 0.5 / 1.5 = 1/3),
    # boxes 1 m apart only touch. Greedy keeps 0, drops 1, keeps 2 (its suppressor 1 was dropped), ...
    boxes = torch.zeros(12, 7)
    boxes[:, 0] = torch.arange(12) * 0.5
    boxes[:, 3:6] = 1.0
    scores = torch.linspace(1.0, 0.1, 12)
    assert nms_rotated(boxes, scores, 0.2, impl=impl).tolist() == [0, 2, 4, 6, 8, 10]
    # reversed scores: the chain runs the other way
    assert nms_rotated(boxes, scores.flip(0), 0.2, impl=impl).tolist() == [11, 9, 7, 5, 3, 1]


def test_pairwise_equals_aligned_on_all_pairs() -> None:
    gen = torch.Generator().manual_seed(5)
    a = random_boxes(40, gen, spread=12.0)
    b = torch.cat((random_boxes(30, gen, spread=12.0), a[:10]))  # shared lower bounds too
    ii, jj = torch.meshgrid(torch.arange(40), torch.arange(40), indexing="ij")
    dense = iou3d_aligned(a[ii.reshape(-1)], b[jj.reshape(-1)]).reshape(40, 40)
    torch.testing.assert_close(iou3d(a, b), dense, atol=1e-6, rtol=0)


def test_group_rank_by_hand() -> None:
    assert group_rank(torch.tensor([3, 5, 3, 3, 5])).tolist() == [0, 0, 1, 2, 1]
    assert group_rank(torch.zeros(0, dtype=torch.long)).numel() == 0


@NMS_IMPLS
def test_nms_with_groups_equals_nms_per_group(impl: str) -> None:
    gen = torch.Generator().manual_seed(5)
    boxes = random_boxes(200, gen, spread=10.0)
    scores = torch.rand(200, generator=gen)
    groups = torch.randint(0, 4, (200,), generator=gen)
    for pre_max, post_max in ((None, None), (30, 12)):
        got = nms_rotated(boxes, scores, 0.2, pre_max, post_max, groups=groups, impl=impl)
        expected = []
        for g in range(4):
            idx = torch.nonzero(groups == g)[:, 0]
            expected += idx[nms_rotated(boxes[idx], scores[idx], 0.2, pre_max, post_max, impl=impl)].tolist()
        assert sorted(got.tolist()) == sorted(expected)
        assert scores[got].tolist() == sorted(scores[got].tolist(), reverse=True)  # by score across groups


def test_compiled_iou_hand_cases() -> None:
    # the hand cases above, through the compiled IoU of the CPU NMS
    sq = box(l=2, w=2)
    cases = [(sq, box(l=4, w=1, yaw=math.pi / 2), 1 / 3), (sq, box(l=4, w=1), 1 / 3),
             (sq, box(yaw=math.pi / 4), 1 / math.sqrt(2)), (sq, sq, 1.0),
             (box(0, 0), box(10, 0), 0.0), (box(0, 0), box(2, 0), 0.0),
             (box(1.0, -3.0, 0.5, 4.5, 1.9, 1.6, 0.7),) * 2 + (1.0,)]
    a = np.array([c[0] for c in cases])
    b = np.array([c[1] for c in cases])
    np.testing.assert_allclose(iou_bev_pairs(a, b), [c[2] for c in cases], atol=1e-9)
    with pytest.raises(ValueError, match="7"):
        iou_bev_pairs(a[:, :6], b[:, :6])


def test_compiled_iou_equals_torch_and_shapely() -> None:
    gen = torch.Generator().manual_seed(7)
    a, b = random_boxes(400, gen), random_boxes(400, gen)
    turned = b[:20].clone()
    turned[:, 6] += math.pi / 2
    a, b = torch.cat((a, b[:20], b[:20])), torch.cat((b, b[:20], turned))  # identical and turned pairs
    got = iou_bev_pairs(a.numpy(), b.numpy())
    assert (got > 0).sum() > 150
    # the torch IoU's inside / on-edge tests have 1e-5 m tolerances
    np.testing.assert_allclose(got, iou_bev_aligned(a.double(), b.double()).numpy(), atol=1e-5)
    ref = np.array([shapely_iou(a[i], b[i]) for i in range(0, 440, 4)])
    np.testing.assert_allclose(got[::4], ref, atol=1e-6)
    far = torch.tensor([60.0, -55.0, 0, 0, 0, 0, 0])
    a, b, far = a.double(), b.double(), far.double()  # the same boxes 80 m out: IoU in the first box's frame
    np.testing.assert_allclose(iou_bev_pairs((a + far).numpy(), (b + far).numpy()), got, atol=1e-9)


def test_compiled_nms_equals_torch_nms_on_many_scenes() -> None:
    gen = torch.Generator().manual_seed(8)
    for scene in range(40):
        n = int(torch.randint(1, 120, (1,), generator=gen))
        boxes = random_boxes(n, gen, spread=float(torch.rand(1, generator=gen)) * 20 + 2)
        scores = torch.rand(n, generator=gen)
        groups = torch.randint(0, 6, (n,), generator=gen)
        for thr, pre_max, post_max in ((0.2, None, None), (0.5, 40, 10), (0.01, 5, 3)):
            ref = nms_rotated(boxes, scores, thr, pre_max, post_max, groups=groups, impl="torch")
            got = nms_rotated(boxes, scores, thr, pre_max, post_max, groups=groups, impl="compiled")
            assert got.tolist() == ref.tolist(), (scene, thr)
            assert nms_rotated(boxes, scores, thr, pre_max, post_max, groups=groups).tolist() == ref.tolist()


def test_nms_impl_selection_errors() -> None:
    boxes, scores = t(box()), torch.ones(1)
    with pytest.raises(ValueError, match="impl must be one of"):
        nms_rotated(boxes, scores, 0.2, impl="fast")
    with pytest.raises(ValueError, match=r"\(N, 7\+\)"):
        nms_rotated_cpu(np.zeros((3, 5)), np.zeros(3), 0.2)
    assert nms_rotated_cpu(np.zeros((0, 7)), np.zeros(0), 0.2).shape == (0,)
