"""ARS 408-21-like automotive radar: sparse clustered returns with Doppler and RCS.

Like the real sensor's unfiltered cluster list (what nuScenes stores and RadarDistill uses), a
sweep holds on the order of 100-140 returns, most of them from the static environment, a few per
annotated object, plus clutter and ghosts. Typical composition per sweep (5 radars, urban scenes):
annotated objects ~20, building facades / walls ~25-45, point scatterers (kerbs, street
furniture, trees, fences, vegetation) ~45-65, poles and guard rails ~2-10, false alarms ~5,
multipath ghosts ~2.

Model (per sweep, in the sensor frame, 2D: the ARS 408 measures no elevation, z = 0):

* Field of view: near scan 0.2-70 m within +-60 deg up to 40 m and +-45 deg up to 70 m; far scan
  up to 250 m within +-9 deg. Returns outside are not reported.
* Returns per annotated box ~ Poisson(lambda): lambda = class base count x aspect gain (projected
  width across the line of sight / 2 m, clipped 0.5-3) x range factor (1 - (r / r_max)^2, with
  r_max = 250 m x 10^((rcs_mean - 10) / 40), the radar equation's r^-4 law).
* Static structures: building facades get lambda = 1.2 per degree of angular extent (smooth walls
  0.5, capped at 60), a street-light pole 1.5, a guard-rail segment 0.8 + 0.08 per degree (cap 4),
  times the range factor. Each return is a scattering centre just behind the visible surface
  (0.1-0.6 m deep along the ray, at most half the box depth; facades 0-0.3 m). Returns behind a
  closer box are dropped (85 %; 100 % behind buildings and walls).
* Static point scatterers (:class:`~training.synth.world.Scatterers`: kerb stones, drain grates,
  signs, bollards, street trees, railings, fences, hedges, vegetation; fixed in the world): each is
  detected per sweep with probability p x range factor (r_max of a target
  :data:`SCATTERER_RANGE_DB` dB weaker) x antenna gain (1 within +-30 deg, 0.6 at 60 deg) unless
  hidden by a closer box, at its position plus its spread (extended clutter has no fixed phase
  centre).
* Noise: range std 0.10 m (near) / 0.25 m (far, r > 70 m); azimuth std 0.1 deg (far) and in the
  near scan 0.3 / 1 / 5 deg at 0 / 45 / 60 deg azimuth (data sheet, interpolated); radial velocity
  std 0.1 m/s; RCS = kind mean (dBsm) + aspect term (vehicles: +4 dB broadside; structures: -4 dB
  grazing to +4 dB normal incidence) + N(0, 2.5 dB), 0.5 dB steps.
* Doppler: with u the unit line of sight, the target's ground velocity v_t and the sensor's
  ground velocity v_s, compensated radial velocity vr_comp = v_t . u and relative radial velocity
  vr = (v_t - v_s) . u; (vx, vy) = vr u and (vx_comp, vy_comp) = vr_comp u (sensor frame).
* False positives: random false alarms (Poisson 6 per sweep within 1-60 m), double-bounce
  multipath ghosts (at twice the range with twice the relative radial velocity, 5 % of vehicle
  returns within 40 m and 2 % of static returns within 30 m) and mirror ghosts behind walls /
  guard rails (reflection of a target across the wall line, 4 % of actor returns on scenes with
  such a line).
* Other fields: ``dyn_prop`` from the compensated Doppler and target state (0 moving, 1 stationary,
  2 oncoming, 3 stationary candidate, 6 crossing moving, 7 stopped), ``id`` = index by increasing
  range, ``ambig_state`` 3 (some stationary clutter 4), ``invalid_state`` mostly 0 (4 for some low
  RCS returns and false alarms, 6 for some ghosts), ``pdh0`` false-alarm probability class (1 for
  targets, 3-6 for ghosts and false alarms), ``*_rms`` 5-bit quality codes growing with range.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from radardistill_ros.conventions import CLASS_NAMES, NUSCENES_RADAR_FIELDS
from training.synth.world import KIND_BUILDING, KIND_GUARDRAIL, KIND_POLE, KIND_WALL, STRUCTURE_KINDS

RADAR_DTYPE = np.dtype(list(NUSCENES_RADAR_FIELDS))
assert RADAR_DTYPE.itemsize == 43

MAX_RANGE = 250.0  #: [m]
NEAR_RANGE = 70.0  #: [m]

# Per box kind (0-9 detection classes, then building, wall, pole, guard rail).
_KINDS = (*CLASS_NAMES, "building", "wall", "pole", "guardrail")
RCS_MEAN = dict(zip(_KINDS, (6.0, 13.0, 12.0, 15.0, 12.0, 2.0, 0.0, -4.0, -7.0, -10.0, 14.0, 8.0, 5.0, 4.0)))
BASE_RETURNS = dict(zip(CLASS_NAMES, (1.9, 2.2, 2.2, 2.5, 2.0, 1.0, 1.2, 1.0, 1.1, 0.55)))
_RCS = np.array([RCS_MEAN[k] for k in _KINDS])
_BASE = np.array([BASE_RETURNS.get(k, 0.0) for k in _KINDS])
_RMAX = MAX_RANGE * 10.0 ** ((_RCS - 10.0) / 40.0)
VEHICLE_CLASSES = np.array([CLASS_NAMES.index(c) for c in ("car", "truck", "construction_vehicle", "bus",
                                                           "trailer")])

#: (points (M, 2), velocities (M, 2)) -> (ghost points, ghost velocities, valid mask), sensor frame.
MirrorFn = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]

FALSE_ALARMS_PER_SWEEP = 6.0  #: mean of the Poisson count of random false alarms
#: Returns per degree of angular extent of a building facade / a (smoother, more specular) wall.
FACADE_RETURNS_PER_DEG = {KIND_BUILDING: 1.2, KIND_WALL: 0.5}
FACADE_MAX_RETURNS = 60.0  #: cap of a facade segment's mean return count
POLE_RETURNS = 1.5  #: mean returns of a street-light pole
RAIL_RETURNS = (0.8, 0.08, 4.0)  #: guard-rail segment: base + per degree of angular extent, cap
MAX_RETURNS_PER_BOX = 60
SCATTERER_RANGE_DB = 8.0  #: weak static clutter: detection range of a target this many dB weaker
#: Near-scan azimuth noise std [deg] at |azimuth| [deg] (ARS 408-21 data sheet: 0.3 / 1 / 5 deg at
#: 0 / 45 / 60 deg).
AZ_STD_NEAR = ((0.0, 45.0, 60.0), (0.3, 1.0, 5.0))
KIND_SCATTERER = 14  #: kind label of a static point scatterer's return (internal)
SRC_CLUTTER = -1  #: source label of a random false alarm
SRC_GHOST = -2  #: source label of a multipath ghost
SRC_SCATTERER = -3  #: source label of a static point scatterer (kerb, furniture, fence, vegetation)


@dataclass
class RadarSweep:
    """One sweep: the records as written to the .pcd and the source box of each (-1/-2: false alarm/ghost)."""

    records: np.ndarray  # structured, RADAR_DTYPE
    source: np.ndarray  # (N,) int64 box index into the scene's boxes, or SRC_*


def in_fov(r: np.ndarray, az: np.ndarray) -> np.ndarray:
    """Whether ranges r [m] and azimuths az [rad] (sensor frame) lie in the near or far scan."""
    a = np.abs(az)
    near = (r >= 0.2) & (((r <= 40.0) & (a <= np.deg2rad(60.0)))
                         | ((r <= NEAR_RANGE) & (a <= np.deg2rad(45.0))))
    far = (r <= MAX_RANGE) & (a <= np.deg2rad(9.0))
    return near | far


def _slab2d(u: np.ndarray, c: np.ndarray, yaw: np.ndarray, hl: np.ndarray, hw: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """Entry/exit distance along unit rays u ``(..., 2)`` from the origin through 2D boxes (broadcast)."""
    cs, sn = np.cos(yaw), np.sin(yaw)
    ox = -(cs * c[..., 0] + sn * c[..., 1])
    oy = -(-sn * c[..., 0] + cs * c[..., 1])
    dx = cs * u[..., 0] + sn * u[..., 1]
    dy = -sn * u[..., 0] + cs * u[..., 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        tx1, tx2 = (-hl - ox) / dx, (hl - ox) / dx
        ty1, ty2 = (-hw - oy) / dy, (hw - oy) / dy
    t_near = np.maximum(np.nan_to_num(np.minimum(tx1, tx2), nan=-np.inf),
                        np.nan_to_num(np.minimum(ty1, ty2), nan=-np.inf))
    t_far = np.minimum(np.nan_to_num(np.maximum(tx1, tx2), nan=np.inf),
                       np.nan_to_num(np.maximum(ty1, ty2), nan=np.inf))
    return t_near, t_far


def _rms_code(sigma: np.ndarray) -> np.ndarray:
    """ARS 408 5-bit quality code (0-31) of a standard deviation (metres or m/s)."""
    return np.clip(np.round(10.0 + 5.0 * np.log2(np.maximum(sigma, 1e-3) / 0.2)), 0, 31).astype(np.int8)


def _occluded(u: np.ndarray, r: np.ndarray, src: np.ndarray, box_xy: np.ndarray, box_yaw: np.ndarray,
              hl: np.ndarray, hw: np.ndarray, occ_idx: np.ndarray, hard_kind: np.ndarray,
              rng: np.random.Generator) -> np.ndarray:
    """Mask of returns (unit rays u, ranges r, source boxes src, -1: none) hidden by a closer box.

    Behind a building or wall always; behind another occluder 85 % of the time.
    """
    m = len(r)
    if m == 0 or len(occ_idx) == 0:
        return np.zeros(m, dtype=bool)
    tn, tf = _slab2d(u[:, None, :], box_xy[occ_idx][None], box_yaw[occ_idx][None], hl[occ_idx][None],
                     hw[occ_idx][None])
    blocks = (tn <= tf) & (tn > 0.0) & (tn < r[:, None] - 0.3) & (occ_idx[None] != src[:, None])
    hard = blocks & hard_kind[occ_idx][None]
    return hard.any(axis=1) | (blocks.any(axis=1) & (rng.random(m) < 0.85))


def simulate(box_xy: np.ndarray, box_yaw: np.ndarray, box_wlh: np.ndarray, box_kind: np.ndarray,
             box_vel: np.ndarray, box_stopped: np.ndarray, sensor_vel: np.ndarray,
             rng: np.random.Generator,
             mirror: MirrorFn | None = None,
             scatterers: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None) -> RadarSweep:
    """Simulate one radar sweep; every input is in the sensor frame at the sweep time.

    box_xy (K, 2) [m], box_yaw (K,) [rad], box_wlh (K, 3) [m], box_kind (K,) (0-9 classes, then
    KIND_*), box_vel (K, 2) ground velocity [m/s], box_stopped (K,) bool (vehicle standing in
    traffic), sensor_vel (2,) ground velocity of the sensor [m/s]. ``mirror(points, velocities)``
    maps target points/velocities (sensor frame) to their mirror images across walls and returns
    (ghost points, ghost velocities, valid mask); None when the scene has no reflecting wall.
    ``scatterers``: (xy (S, 2) [m] sensor frame, RCS (S,) [dBsm], detection probability (S,),
    position spread (S,) [m]) of the static point scatterers
    (:class:`~training.synth.world.Scatterers`), or None.
    """
    # Candidate boxes: in range and within the widest field of view.
    r_all = np.hypot(box_xy[:, 0], box_xy[:, 1])
    rad_all = 0.5 * np.hypot(box_wlh[:, 0], box_wlh[:, 1])
    near = (r_all - rad_all < MAX_RANGE) & (r_all > rad_all + 0.3) & (box_xy[:, 0] > -rad_all)
    ci = np.nonzero(near)[0]
    box_xy, box_yaw, box_wlh, box_kind = box_xy[ci], box_yaw[ci], box_wlh[ci], box_kind[ci]
    box_vel, box_stopped = box_vel[ci], box_stopped[ci]
    hl, hw = box_wlh[:, 1] / 2.0, box_wlh[:, 0] / 2.0
    r_c = r_all[ci]
    radius = rad_all[ci]
    az_c = np.arctan2(box_xy[:, 1], box_xy[:, 0])
    half_ang = np.arcsin(np.clip(radius / np.maximum(r_c, 1e-6), 0.0, 1.0))
    cand = np.abs(az_c) - half_ang < np.deg2rad(62.0)
    # Expected number of returns.
    alpha = box_yaw - az_c  # heading relative to the line of sight
    proj = np.abs(box_wlh[:, 1] * np.sin(alpha)) + np.abs(box_wlh[:, 0] * np.cos(alpha))
    rf = np.clip(1.0 - (r_c / _RMAX[box_kind]) ** 2, 0.0, 1.0)
    lam = _BASE[box_kind] * np.clip(proj / 2.0, 0.5, 3.0) * rf
    facade = (box_kind == KIND_BUILDING) | (box_kind == KIND_WALL)
    ang_deg = np.rad2deg(2 * half_ang)
    per_deg = np.where(box_kind == KIND_WALL, FACADE_RETURNS_PER_DEG[KIND_WALL],
                       FACADE_RETURNS_PER_DEG[KIND_BUILDING])
    lam = np.where(facade, np.minimum(per_deg * ang_deg, FACADE_MAX_RETURNS) * rf, lam)
    lam = np.where(box_kind == KIND_POLE, POLE_RETURNS * rf, lam)
    lam = np.where(box_kind == KIND_GUARDRAIL,
                   np.minimum(RAIL_RETURNS[0] + RAIL_RETURNS[1] * ang_deg, RAIL_RETURNS[2]) * rf, lam)
    lam = np.where(cand, lam, 0.0)
    n = np.minimum(rng.poisson(lam), MAX_RETURNS_PER_BOX)
    src = np.repeat(np.arange(len(n)), n)
    m = len(src)
    # Scattering centres: a random footprint point's line of sight, just behind the entry point.
    q_local = (rng.random((m, 2)) * 2.0 - 1.0) * np.column_stack([hl[src], hw[src]])
    cs, sn = np.cos(box_yaw[src]), np.sin(box_yaw[src])
    q = box_xy[src] + np.column_stack([cs * q_local[:, 0] - sn * q_local[:, 1],
                                       sn * q_local[:, 0] + cs * q_local[:, 1]])
    u = q / np.linalg.norm(q, axis=1, keepdims=True)
    t_in, t_out = _slab2d(u, box_xy[src], box_yaw[src], hl[src], hw[src])
    thick = np.maximum(t_out - t_in, 0.0)
    r = t_in + np.where(facade[src], 0.3 * rng.random(m), np.minimum(0.1 + 0.5 * rng.random(m), 0.5 * thick))
    az = np.arctan2(u[:, 1], u[:, 0])
    # Occlusion by closer boxes (not by poles, rails and cones).
    occluder = cand & ~np.isin(box_kind, (KIND_POLE, KIND_GUARDRAIL, CLASS_NAMES.index("traffic_cone")))
    occ_idx = np.nonzero(occluder)[0]
    hard_kind = np.isin(box_kind, (KIND_BUILDING, KIND_WALL))
    keep = ~_occluded(u, r, src, box_xy, box_yaw, hl, hw, occ_idx, hard_kind, rng)
    src, r, az = src[keep], r[keep], az[keep]
    kinds = box_kind[src]
    v_t = box_vel[src]
    stopped_t = box_stopped[src]
    rel_yaw = box_yaw[src] - az
    source_t = ci[src]
    # Static point scatterers (kerbs, street furniture, fences, vegetation): detected per sweep with
    # probability p x range factor x antenna gain, unless hidden by a closer box.
    if scatterers is not None and len(scatterers[0]):
        s_xy, s_rcs, s_p, s_spread = scatterers
        s_r = np.hypot(s_xy[:, 0], s_xy[:, 1])
        s_az = np.arctan2(s_xy[:, 1], s_xy[:, 0])
        vis = np.nonzero(in_fov(s_r, s_az))[0]
        s_rmax = MAX_RANGE * 10.0 ** ((s_rcs[vis] - 10.0 - SCATTERER_RANGE_DB) / 40.0)
        gain = 1.0 - 0.4 * np.clip((np.abs(s_az[vis]) - np.deg2rad(30.0)) / np.deg2rad(30.0), 0.0, 1.0)
        p = s_p[vis] * np.clip(1.0 - (s_r[vis] / s_rmax) ** 2, 0.0, 1.0) * gain
        det = vis[rng.random(len(vis)) < p]
        d_u = s_xy[det] / np.maximum(s_r[det], 1e-6)[:, None]
        hidden = _occluded(d_u, s_r[det], np.full(len(det), -1), box_xy, box_yaw, hl, hw, occ_idx, hard_kind,
                           rng)
        det = det[~hidden]
        n_s = len(det)
        d_xy = s_xy[det] + rng.normal(0.0, 1.0, (n_s, 2)) * s_spread[det, None]
        r = np.concatenate([r, np.hypot(d_xy[:, 0], d_xy[:, 1])])
        az = np.concatenate([az, np.arctan2(d_xy[:, 1], d_xy[:, 0])])
        kinds = np.concatenate([kinds, np.full(n_s, KIND_SCATTERER)])
        v_t = np.concatenate([v_t, np.zeros((n_s, 2))])
        stopped_t = np.concatenate([stopped_t, np.zeros(n_s, dtype=bool)])
        rel_yaw = np.concatenate([rel_yaw, np.zeros(n_s)])
        source_t = np.concatenate([source_t, np.full(n_s, SRC_SCATTERER)])
        s_rcs_det = s_rcs[det]
    else:
        s_rcs_det = np.zeros(0)
    m = len(r)
    far = r > NEAR_RANGE
    r = r + rng.normal(0.0, 1.0, m) * np.where(far, 0.25, 0.10)
    az = az + rng.normal(0.0, 1.0, m) * np.deg2rad(np.where(far, 0.1, np.interp(np.rad2deg(np.abs(az)),
                                                                                 *AZ_STD_NEAR)))
    u = np.column_stack([np.cos(az), np.sin(az)])
    vr_comp = np.einsum("ij,ij->i", v_t, u) + rng.normal(0.0, 0.1, m)
    # RCS: kind mean + aspect (vehicles: broadside brighter; structures: normal incidence brighter).
    is_struct = np.isin(kinds, STRUCTURE_KINDS)
    aspect_db = np.where(np.isin(kinds, VEHICLE_CLASSES), 4.0 * np.abs(np.sin(rel_yaw)), 0.0)
    aspect_db = np.where(is_struct, 8.0 * np.abs(np.sin(rel_yaw)) - 4.0, aspect_db)
    mean_rcs = _RCS[np.minimum(kinds, len(_RCS) - 1)]
    mean_rcs[kinds == KIND_SCATTERER] = s_rcs_det
    rcs = mean_rcs + aspect_db + rng.normal(0.0, 2.5, m)
    speed = np.linalg.norm(v_t, axis=1)
    pdh0 = np.ones(m, dtype=np.int8)
    # Valid low-RCS clusters (invalid_state 4) among weak static returns.
    invalid = np.where((rcs < -8.0) & (rng.random(m) < 0.3), 4, 0).astype(np.int8)
    # Multipath: double bounce (twice the range, twice the relative radial velocity).
    vr_rel = vr_comp - u @ sensor_vel
    static_bg = is_struct | (kinds == KIND_SCATTERER)
    db = (np.isin(kinds, VEHICLE_CLASSES) & (r < 40.0) & (rng.random(m) < 0.05)) | (
        static_bg & (r < 30.0) & (rng.random(m) < 0.02))
    g_r = 2.0 * r[db] + rng.normal(0.0, 0.3, int(db.sum()))
    g_az = az[db] + rng.normal(0.0, np.deg2rad(0.3), int(db.sum()))
    g_u = np.column_stack([np.cos(g_az), np.sin(g_az)])
    g_vr_comp = 2.0 * vr_rel[db] + g_u @ sensor_vel
    g_rcs = rcs[db] - 12.0 + rng.normal(0.0, 2.0, int(db.sum()))
    g_speed = np.abs(g_vr_comp)
    # Mirror ghosts behind walls and guard rails.
    if mirror is not None and m:
        sel = (kinds < len(CLASS_NAMES)) & (rng.random(m) < 0.04)
        pts = r[sel, None] * u[sel]
        mp, mv, ok = mirror(pts, v_t[sel])
        mp, mv = mp[ok], mv[ok]
        m_r = np.linalg.norm(mp, axis=1)
        m_az = np.arctan2(mp[:, 1], mp[:, 0])
        m_u = np.column_stack([np.cos(m_az), np.sin(m_az)])
        g_r = np.concatenate([g_r, m_r])
        g_az = np.concatenate([g_az, m_az])
        g_u = np.concatenate([g_u, m_u])
        g_vr_comp = np.concatenate([g_vr_comp, np.einsum("ij,ij->i", mv, m_u)])
        g_rcs = np.concatenate([g_rcs, rcs[sel][ok] - 8.0 + rng.normal(0.0, 2.0, int(ok.sum()))])
        g_speed = np.concatenate([g_speed, np.linalg.norm(mv, axis=1)])
    n_g = len(g_r)
    # Random false alarms.
    n_fa = int(rng.poisson(FALSE_ALARMS_PER_SWEEP))
    fa_r = rng.uniform(1.0, 60.0, n_fa)
    fa_az = rng.uniform(-np.deg2rad(60.0), np.deg2rad(60.0), n_fa)
    fa_u = np.column_stack([np.cos(fa_az), np.sin(fa_az)])
    fa_moving = rng.random(n_fa) < 0.3
    fa_vr_comp = np.where(fa_moving, rng.uniform(-10.0, 10.0, n_fa), rng.normal(0.0, 0.2, n_fa))
    fa_rcs = rng.uniform(-15.0, 0.0, n_fa)
    # Assemble.
    r_all = np.concatenate([r, g_r, fa_r])
    az_all = np.concatenate([az, g_az, fa_az])
    u_all = np.concatenate([u, g_u, fa_u])
    vr_comp_all = np.concatenate([vr_comp, g_vr_comp, fa_vr_comp])
    rcs_all = np.round(np.concatenate([rcs, g_rcs, fa_rcs]) * 2.0) / 2.0
    source = np.concatenate([source_t, np.full(n_g, SRC_GHOST), np.full(n_fa, SRC_CLUTTER)]).astype(np.int64)
    speed_all = np.concatenate([speed, g_speed, np.where(fa_moving, np.abs(fa_vr_comp), 0.0)])
    stopped_all = np.concatenate([stopped_t, np.zeros(n_g + n_fa, dtype=bool)])
    pdh0 = np.concatenate([pdh0, rng.integers(3, 7, n_g), rng.integers(4, 8, n_fa)]).astype(np.int8)
    invalid = np.concatenate([
        invalid,
        np.where(rng.random(n_g) < 0.2, 6, 0),
        np.where(rng.random(n_fa) < 0.25, np.where(rng.random(n_fa) < 0.7, 4, 1), 0),
    ]).astype(np.int8)
    ok = in_fov(r_all, az_all)
    order = np.nonzero(ok)[0][np.argsort(r_all[ok], kind="stable")]  # by increasing range
    r_all, u_all, vr_comp_all, rcs_all = r_all[order], u_all[order], vr_comp_all[order], rcs_all[order]
    source, speed_all, stopped_all = source[order], speed_all[order], stopped_all[order]
    pdh0, invalid = pdh0[order], invalid[order]
    k = len(r_all)
    vr_all = vr_comp_all - u_all @ sensor_vel
    moving = speed_all > 0.3
    dyn = np.where(vr_comp_all < 0.0, 2, 0)
    dyn = np.where(moving & (np.abs(vr_comp_all) < 0.5), 6, dyn)
    dyn = np.where(~moving, np.where(rng.random(k) < 0.15, 3, 1), dyn)
    dyn = np.where(stopped_all & (rng.random(k) < 0.5), 7, dyn)
    ambig = np.where((dyn == 3) & (rng.random(k) < 0.5), 4, 3)
    sig_pos = np.where(r_all > NEAR_RANGE, 0.4, 0.1) + 0.002 * r_all
    rec = np.zeros(k, dtype=RADAR_DTYPE)
    rec["x"] = r_all * u_all[:, 0]
    rec["y"] = r_all * u_all[:, 1]
    rec["z"] = 0.0
    rec["dyn_prop"] = dyn
    rec["id"] = np.arange(k)
    rec["rcs"] = rcs_all
    rec["vx"] = vr_all * u_all[:, 0]
    rec["vy"] = vr_all * u_all[:, 1]
    rec["vx_comp"] = vr_comp_all * u_all[:, 0]
    rec["vy_comp"] = vr_comp_all * u_all[:, 1]
    rec["is_quality_valid"] = 1
    rec["ambig_state"] = ambig
    rec["x_rms"] = _rms_code(sig_pos)
    rec["y_rms"] = _rms_code(sig_pos + r_all * np.deg2rad(0.3))
    rec["invalid_state"] = invalid
    rec["pdh0"] = pdh0
    rec["vx_rms"] = _rms_code(np.full(k, 0.1) + 0.002 * r_all)
    rec["vy_rms"] = _rms_code(np.full(k, 0.1) + 0.004 * r_all)
    return RadarSweep(records=rec, source=source)
