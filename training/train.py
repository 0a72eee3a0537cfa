"""Training: LiDAR teacher, radar baseline, RadarDistill student (CVPR 2024, reference digest s. 6).

    python -m training.train --config lite --stage {teacher,baseline,distill} --dataroot D \\
        --version V --split S --out RUN_DIR [--teacher CKPT] [--no-cma] [--no-afd] [--no-pfd] \\
        [--epochs N] [--batch-size B] [--resume] [--device cpu|cuda] [--max-samples N] [--seed S]
    torchrun --nproc_per_node G -m training.train ...        # DistributedDataParallel

Stages:

* ``teacher``: the LiDAR PillarNet-18 (``build_model(cfg, "lidar")``), L = L_det.
* ``baseline``: the radar model without distillation, with CMA (``--no-cma``: without), L = L_det,
  initialised from scratch.
* ``distill``: the radar student with the frozen teacher (``--teacher``): teacher weights fixed,
  BatchNorm in eval mode on every forward, no autograd. The student is initialised from the
  teacher where parameter/buffer names and shapes match (the "inheriting" strategy); the radar VFE's
  first layer (``front_end.vfe.linear``: 15 vs 14 inputs) and CMA start fresh.
  L = L_det + gamma * L_AFD + delta * L_PFD (gamma = 5, delta = 25; ``--no-afd`` / ``--no-pfd``
  drop a term). AFD matches F^{a(1)}, F^{a(2)} to the teacher's F^l = x_conv4; without CMA
  (``--no-cma``, Table 3 row #5) it matches the student's own x_conv4, and L_AFD is scaled by
  2 / (number of maps) so that it stays the mean over the distilled maps. PFD matches F^{h(1)},
  F^{h(2)} with the class-agnostic GT heatmap and the student's own heatmap logits.

``--no-cma`` changes the model, so the run's config (stored in every checkpoint, with its digest)
has ``model.cma.enabled: false``; see :func:`stage_config`.

Optimisation as published (OpenPCDet ``adam_onecycle``): Adam with decoupled weight decay 0.01
(``torch.optim.AdamW``; OpenPCDet's ``OptimWrapper(true_wd=True)``), one-cycle schedule stepped
every iteration (max lr 1e-3, div factor 10, pct_start 0.4, cosine annealing, final lr
max / 10 / 1e4) with beta1 cycled 0.95 -> 0.85 -> 0.95, gradient-norm clip 10. AMP (fp16 autocast +
GradScaler) on CUDA. ``--batch-size`` is per process (paper: 4 per GPU x 4 GPUs).

Outputs in RUN_DIR: ``checkpoints/epoch_NNN.pt`` after every epoch (model + optimizer + scheduler +
scaler + epoch, written through :mod:`radardistill_ros.model.checkpoint` with the config digest;
the last ``keep_checkpoints`` are kept), ``final.pt`` (weights only, same format), ``metrics.jsonl``
(one JSON record per iteration and per epoch: losses and their components, lr, beta1, grad norm,
samples/s) and ``run.json`` (options). ``--resume`` continues from the newest epoch checkpoint.

Determinism: ``--seed`` seeds model initialisation; the sample order is a ``DistributedSampler``
permutation of (seed, epoch) (also with one process) and augmentation draws are a function of
(seed, epoch, index), so a run (and a resumed run) repeats exactly on the same machine/threads.
Multi-GPU / multi-node: when ``WORLD_SIZE > 1`` (torchrun), the process group is initialised
(NCCL on CUDA, gloo on CPU), the student is wrapped in DistributedDataParallel, each rank reads its
``DistributedSampler`` shard, and only rank 0 logs and writes checkpoints.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from radardistill_ros.config import Config, load_config
from radardistill_ros.model import build_model, load_checkpoint, save_checkpoint
from radardistill_ros.model.checkpoint import CheckpointError, read_checkpoint
from radardistill_ros.model.detector import DetectorOutput, Modality, PillarNetDetector
from training.dataset import DetectionDataset, collate
from training.losses import afd_loss, detection_loss, pfd_loss, total_loss
from training.nuscenes_data import NuScenesLoader

__all__ = [
    "FRESH_PREFIXES",
    "STAGES",
    "FrozenTeacher",
    "TrainOptions",
    "Trainer",
    "inherit_weights",
    "main",
    "stage_config",
    "stage_modality",
    "train",
]

STAGES: tuple[str, ...] = ("teacher", "baseline", "distill")
#: Student tensors never inherited from the teacher: the radar VFE's first layer and CMA.
FRESH_PREFIXES: tuple[str, ...] = ("front_end.vfe.linear.", "dense.cma.")
_CKPT_DIR = "checkpoints"


# --------------------------------------------------------------------------------------------
# stage set-up


def stage_modality(stage: str) -> Modality:
    """``"lidar"`` for the teacher, ``"radar"`` for the baseline and the student."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    return "lidar" if stage == "teacher" else "radar"


def stage_config(cfg: Config, stage: str, cma: bool = True) -> Config:
    """The run's config: ``cfg`` with ``model.cma.enabled = False`` for a radar stage without CMA
    (``--no-cma``); the teacher has no CMA whatever the flag. Checkpoints carry this config."""
    if stage_modality(stage) == "radar" and not cma and cfg.model.cma.enabled:
        model = dataclasses.replace(cfg.model, cma=dataclasses.replace(cfg.model.cma, enabled=False))
        return dataclasses.replace(cfg, model=model)
    return cfg


def inherit_weights(student: nn.Module, teacher: nn.Module,
                    fresh_prefixes: Sequence[str] = FRESH_PREFIXES) -> list[str]:
    """Copy the teacher's parameters and buffers into the student where the names and shapes
    match, except names starting with ``fresh_prefixes``; returns the inherited names."""
    t_state = teacher.state_dict()
    s_state = student.state_dict()
    inherited = []
    for name, value in s_state.items():
        if name.startswith(tuple(fresh_prefixes)):
            continue
        src = t_state.get(name)
        if src is not None and src.shape == value.shape and src.dtype == value.dtype:
            s_state[name] = src.detach().clone()
            inherited.append(name)
    student.load_state_dict(s_state, strict=True)
    return inherited


class FrozenTeacher:
    """A frozen LiDAR teacher: weights fixed (``requires_grad = False``), BatchNorm and everything
    else in eval mode on EVERY forward (set again before each call, so a ``.train()`` anywhere
    cannot leak into it), no autograd graph. Not an ``nn.Module``, so it is never part of the
    student's parameters, optimizer, state dict or DDP wrapper."""

    def __init__(self, model: PillarNetDetector):
        if model.modality != "lidar":
            raise ValueError(f"the teacher must be a LiDAR model, got modality {model.modality!r}")
        self.model = model
        for p in model.parameters():
            p.requires_grad_(False)
        model.eval()

    def __call__(self, points: Tensor, batch_size: int) -> DetectorOutput:
        self.model.eval()
        with torch.no_grad():
            return self.model(points, batch_size)


# --------------------------------------------------------------------------------------------
# options


@dataclasses.dataclass
class TrainOptions:
    """Everything a run needs besides the config (see the module docstring and ``--help``)."""

    stage: str
    dataroot: str
    version: str
    split: str
    out: str
    teacher: str | None = None
    cma: bool = True
    afd: bool = True
    pfd: bool = True
    epochs: int | None = None
    batch_size: int | None = None
    resume: bool = False
    device: str = "cpu"
    max_samples: int | None = None
    seed: int | None = None
    num_workers: int | None = None
    augment: bool = True
    amp: bool | None = None
    lr: float | None = None
    tokens: list[str] | None = None
    keep_checkpoints: int = 3
    overwrite: bool = False
    log_every: int = 1
    show_progress: bool = True
    bn_recalibrate: int = 32


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable[Any], forward: Any, max_batches: int) -> int:
    """Re-estimate every BatchNorm's running mean/variance as the plain average over up to
    ``max_batches`` training batches ("precise BN"); returns the number of batches used.

    With the published BN momentum of 0.01 the running statistics trail the weights by ~100
    iterations, which dominates eval-mode results of short runs (an overfit run scored 0.49 mAP
    in train-mode BN vs 0.26 in eval mode). ``forward(batch)`` runs the model in train mode.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or max_batches <= 0:
        return 0
    saved = [(m, m.momentum) for m in bns]
    was_training = model.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the batches below
    model.train()
    used = 0
    try:
        for batch in batches:
            if used >= max_batches:
                break
            forward(batch)
            used += 1
    finally:
        for m, momentum in saved:
            m.momentum = momentum
        model.train(was_training)
    return used


def _dist_env() -> tuple[int, int, int]:
    """(world size, rank, local rank) from the torchrun environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return world, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))


def _to_device(x: Any, device: torch.device) -> Any:
    if isinstance(x, Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, Mapping):
        return {k: _to_device(v, device) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_to_device(v, device) for v in x)
    return x


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (third-party code may use the legacy global RNG)
    torch.manual_seed(seed)


class _JsonlLog:
    """Append-only JSONL metrics log (rank 0 only)."""

    def __init__(self, path: Path | None):
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: Mapping[str, Any]) -> None:
        if self.path is not None:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")


# --------------------------------------------------------------------------------------------
# the trainer


class Trainer:
    """One training run (a stage); :meth:`run` trains and returns the final checkpoint path.

    Attributes for inspection (tests): ``model`` (the student/baseline/teacher being trained,
    unwrapped), ``teacher`` (:class:`FrozenTeacher` or None), ``inherited`` (names copied from the
    teacher), ``cfg`` (the run's config), ``dataset``, ``optimizer``, ``scheduler``.
    """

    def __init__(self, cfg: Config, opts: TrainOptions):
        self.opts = opts
        self.stage = opts.stage
        self.modality = stage_modality(opts.stage)
        self.cfg = stage_config(cfg, opts.stage, opts.cma)
        self.epochs = opts.epochs if opts.epochs is not None else self.cfg.train.epochs
        self.batch_size = opts.batch_size if opts.batch_size is not None else self.cfg.train.batch_size
        self.seed = opts.seed if opts.seed is not None else self.cfg.train.seed
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch size must be >= 1, got {self.epochs}, {self.batch_size}")
        self.use_afd = self.stage == "distill" and opts.afd
        self.use_pfd = self.stage == "distill" and opts.pfd
        self.out = Path(opts.out)

        # distributed set-up (only when launched with WORLD_SIZE > 1)
        self.world, self.rank, local_rank = _dist_env()
        self.distributed = self.world > 1
        if opts.device.startswith("cuda"):
            if not torch.cuda.is_available():
                raise RuntimeError("--device cuda requested but torch has no CUDA (this torch build: "
                                   f"{torch.__version__}); use --device cpu")
            self.device = torch.device("cuda", local_rank if self.distributed else
                                       (torch.device(opts.device).index or 0))
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device(opts.device)
        if self.distributed and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.is_main = self.rank == 0
        self.amp = (self.device.type == "cuda") if opts.amp is None else bool(opts.amp)
        if self.amp and self.device.type != "cuda":
            raise ValueError("AMP (fp16 autocast + GradScaler) needs CUDA")

        # data
        _seed_everything(self.seed)
        loader = NuScenesLoader(opts.dataroot, opts.version, self.cfg.data, self.cfg.grid)
        tokens = list(opts.tokens) if opts.tokens is not None else loader.sample_tokens(opts.split)
        if opts.max_samples is not None:
            tokens = tokens[: opts.max_samples]
        if not tokens:
            raise ValueError(f"no samples to train on (split {opts.split!r}, max_samples {opts.max_samples})")
        mode = {"teacher": "teacher", "baseline": "student"}.get(
            self.stage, "distill" if (self.use_afd or self.use_pfd) else "student")
        self.dataset = DetectionDataset(loader, tokens=tokens, grid=self.cfg.grid, targets=self.cfg.targets,
                                        mode=mode, augment=self.cfg.data.augment if opts.augment else None,
                                        seed=self.seed)
        self.sampler = DistributedSampler(self.dataset, num_replicas=self.world, rank=self.rank, shuffle=True,
                                          seed=self.seed, drop_last=False)
        workers = opts.num_workers if opts.num_workers is not None else self.cfg.train.num_workers
        self.loader = DataLoader(self.dataset, batch_size=self.batch_size, sampler=self.sampler,
                                 num_workers=workers, collate_fn=collate, drop_last=False,
                                 pin_memory=self.device.type == "cuda", persistent_workers=False)
        self.iters_per_epoch = len(self.loader)
        self.total_steps = self.epochs * self.iters_per_epoch

        # models
        self.teacher: FrozenTeacher | None = None
        self.teacher_path: str | None = opts.teacher
        self.inherited: list[str] = []
        self.model = build_model(self.cfg, self.modality).to(self.device)
        if self.stage == "distill":
            if not opts.teacher:
                raise ValueError("stage distill needs --teacher CKPT (a LiDAR teacher checkpoint)")
            t_model, t_cfg = load_checkpoint(opts.teacher, modality="lidar")
            same = (t_cfg.grid == self.cfg.grid and t_cfg.model.dense_enc == self.cfg.model.dense_enc
                    and t_cfg.model.backbone_channels == self.cfg.model.backbone_channels)
            if not same:
                raise CheckpointError(f"{opts.teacher}: teacher config {t_cfg.name!r} has another grid or "
                                      f"feature widths than the student config {self.cfg.name!r}")
            self.teacher = FrozenTeacher(t_model.to(self.device))
            self.inherited = inherit_weights(self.model, t_model)
        elif opts.teacher:
            raise ValueError(f"--teacher is only used by stage distill, not {self.stage!r}")
        self.ddp_model: nn.Module = self.model
        if self.distributed:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

        # optimisation: Adam with decoupled weight decay + one-cycle, per iteration
        t = self.cfg.train
        self.max_lr = opts.lr if opts.lr is not None else t.lr
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.max_lr / t.div_factor,
                                           betas=(t.momentum[0], 0.99), weight_decay=t.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer, max_lr=self.max_lr, total_steps=self.total_steps, pct_start=t.pct_start,
            anneal_strategy="cos", cycle_momentum=True, base_momentum=min(t.momentum),
            max_momentum=max(t.momentum), div_factor=t.div_factor, final_div_factor=1e4)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.start_epoch = 0
        self._prepare_out_dir()
        self.log = _JsonlLog(self.out / "metrics.jsonl" if self.is_main else None)
        if opts.resume:
            self._resume()

    # ---------------------------------------------------------------------------- checkpoints

    def _prepare_out_dir(self) -> None:
        """A fresh run refuses a RUN_DIR holding a previous run's checkpoints or log (``--resume``
        continues it, ``--overwrite`` deletes them). Every rank checks before any rank writes."""
        old = [*self._epoch_checkpoints(), *(p for p in (self.out / "final.pt", self.out / "metrics.jsonl")
                                             if p.exists())]
        if old and not self.opts.resume:
            if not self.opts.overwrite:
                raise FileExistsError(f"{self.out} holds a previous run ({old[0].name}, ...): pass --resume "
                                      "to continue it or --overwrite to replace it")
            if self.is_main:
                for p in old:
                    p.unlink()
        if self.distributed:
            dist.barrier()

    def _epoch_checkpoints(self) -> list[Path]:
        return sorted((self.out / _CKPT_DIR).glob("epoch_*.pt"))

    def _run_signature(self) -> dict[str, Any]:
        return {"stage": self.stage, "afd": self.use_afd, "pfd": self.use_pfd, "epochs": self.epochs,
                "batch_size": self.batch_size, "world_size": self.world, "seed": self.seed,
                "max_lr": self.max_lr, "total_steps": self.total_steps}

    def _save_epoch(self, epoch: int) -> Path:
        path = self.out / _CKPT_DIR / f"epoch_{epoch + 1:03d}.pt"
        extra = {**self._run_signature(), "epoch": epoch + 1, "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                 "teacher": self.teacher_path, "inherited": len(self.inherited),
                 "torch_rng": torch.get_rng_state()}
        save_checkpoint(path, self.model, self.cfg, self.modality, extra)
        old = self._epoch_checkpoints()
        for p in old[: max(0, len(old) - max(1, self.opts.keep_checkpoints))]:
            p.unlink()
        return path

    def _resume(self) -> None:
        ckpts = self._epoch_checkpoints()
        if not ckpts:
            if self.is_main:
                print(f"[train] --resume: no checkpoint in {self.out / _CKPT_DIR}, starting fresh",
                      flush=True)
            return
        path = ckpts[-1]
        ckpt = read_checkpoint(path)
        extra = ckpt["extra"]
        mine = self._run_signature()
        diff = {k: (extra.get(k), v) for k, v in mine.items() if extra.get(k) != v}
        if diff:
            raise CheckpointError(f"{path}: cannot resume, run settings differ (checkpoint, now): {diff}")
        load_checkpoint(path, cfg=self.cfg, modality=self.modality, model=self.model)
        self.optimizer.load_state_dict(extra["optimizer"])
        self.scheduler.load_state_dict(extra["scheduler"])
        self.scaler.load_state_dict(extra["scaler"])
        self.start_epoch = int(extra["epoch"])
        if self.is_main:
            print(f"[train] resumed from {path} (epoch {self.start_epoch}/{self.epochs})", flush=True)

    # ---------------------------------------------------------------------------- losses

    def compute_losses(self, batch: Mapping[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        """L = L_det (+ gamma L_AFD + delta L_PFD for distill) of one batch; components detached."""
        bsz = len(batch["tokens"])
        points = batch["lidar" if self.modality == "lidar" else "radar"]
        targets = _to_device(batch["targets"], self.device)
        autocast = torch.autocast("cuda", dtype=torch.float16) if self.amp else nullcontext()
        with autocast:
            out: DetectorOutput = self.ddp_model(points.to(self.device, non_blocking=True), bsz)
        lc = self.cfg.loss
        l_det, comps = detection_loss(out.head, targets, self.cfg.grid, lc)
        zero = l_det.new_zeros(())
        l_afd = l_pfd = zero
        if self.teacher is not None and (self.use_afd or self.use_pfd):
            with autocast:
                t_out = self.teacher(batch["lidar"].to(self.device, non_blocking=True), bsz)
            if self.use_afd:
                maps = [out.aligned1, out.aligned2] if out.aligned1 is not None else [out.x_conv4]
                l_afd = afd_loss(maps, t_out.x_conv4, lc.afd_alpha, lc.afd_beta) * (2.0 / len(maps))
            if self.use_pfd:
                gt_hm = torch.cat([t["heatmap"] for t in targets], dim=1)
                logits = torch.cat([o["hm"] for o in out.head], dim=1)
                l_pfd = pfd_loss([out.high1, out.high2], [t_out.high1, t_out.high2], gt_hm, logits,
                                 lc.pfd_sigma, lc.pfd_lambda1, lc.pfd_lambda2, lc.pfd_tau)
        loss = total_loss(l_det, l_afd, l_pfd, lc.gamma, lc.delta)
        comps = {**comps, "det": l_det.detach(), "afd": l_afd.detach(), "pfd": l_pfd.detach()}
        return loss, comps

    # ---------------------------------------------------------------------------- loop

    def _all_finite(self, value: Tensor) -> bool:
        ok = torch.isfinite(value.detach()).all().to(torch.float32).reshape(1)
        if self.distributed:
            dist.all_reduce(ok, op=dist.ReduceOp.MIN)
        return bool(ok.item() > 0)

    def _mean_over_ranks(self, values: dict[str, float]) -> dict[str, float]:
        if not self.distributed or not values:
            return values
        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return {k: float(v) / self.world for k, v in zip(keys, t.tolist())}

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over this rank's shard; returns the epoch means (averaged over ranks)."""
        self.sampler.set_epoch(epoch)
        self.dataset.set_epoch(epoch)
        self.model.train()
        sums: dict[str, float] = {}
        n_iter = n_skipped = n_samples = 0
        t_epoch = time.perf_counter()
        bar = tqdm(self.loader, desc=f"{self.stage} {epoch + 1}/{self.epochs}", unit="it",
                   disable=not (self.is_main and self.opts.show_progress), leave=False, dynamic_ncols=True)
        t_last = time.perf_counter()
        for it, batch in enumerate(bar):
            bsz = len(batch["tokens"])
            loss, comps = self.compute_losses(batch)
            self.optimizer.zero_grad(set_to_none=True)
            grad_norm = float("nan")
            if self._all_finite(loss):
                self.scaler.scale(loss).backward()
                self.scaler.unscale_(self.optimizer)
                gn = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
                grad_norm = float(gn)
                if self.amp:
                    self.scaler.step(self.optimizer)   # skips the step itself on inf/nan gradients
                elif math.isfinite(grad_norm):
                    self.optimizer.step()
                else:
                    n_skipped += 1
                self.scaler.update()
            else:
                n_skipped += 1
            lr = self.optimizer.param_groups[0]["lr"]
            beta1 = self.optimizer.param_groups[0]["betas"][0]
            self.scheduler.step()
            now = time.perf_counter()
            dt, t_last = now - t_last, now
            values = {"loss": float(loss.detach()), **{k: float(v) for k, v in comps.items()}}
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            n_iter += 1
            n_samples += bsz
            if self.is_main:
                bar.set_postfix(loss=f"{values['loss']:.3f}", lr=f"{lr:.2e}")
                if (it + 1) % max(1, self.opts.log_every) == 0 or it + 1 == self.iters_per_epoch:
                    self.log.write({"type": "iter", "stage": self.stage, "epoch": epoch + 1, "iter": it + 1,
                                    "step": epoch * self.iters_per_epoch + it + 1, **values, "lr": lr,
                                    "beta1": beta1, "grad_norm": grad_norm, "batch_size": bsz,
                                    "iter_time_s": dt, "samples_per_s": bsz * self.world / max(dt, 1e-9)})
        bar.close()
        elapsed = time.perf_counter() - t_epoch
        means = self._mean_over_ranks({k: v / max(n_iter, 1) for k, v in sums.items()})
        total = self._mean_over_ranks({"samples": float(n_samples)})["samples"] * self.world
        return {**means, "epoch_time_s": elapsed, "samples": total,
                "samples_per_s": total / max(elapsed, 1e-9), "iterations": n_iter, "skipped_steps": n_skipped}

    def run(self) -> Path:
        """Train from ``start_epoch`` to ``epochs``; writes checkpoints and the log; returns
        ``RUN_DIR/final.pt``."""
        final = self.out / "final.pt"
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            opts = {k: (list(v) if isinstance(v, (list, tuple)) else v)
                    for k, v in dataclasses.asdict(self.opts).items() if k != "tokens"}
            info = {**self._run_signature(), "config": self.cfg.name, "digest": self.cfg.digest(),
                    "modality": self.modality, "samples": len(self.dataset),
                    "iters_per_epoch": self.iters_per_epoch, "inherited_tensors": len(self.inherited),
                    "device": str(self.device), "amp": self.amp,
                    "start_epoch": self.start_epoch, "options": opts}
            (self.out / "run.json").write_text(json.dumps(info, indent=2))
            self.log.write({"type": "start", **{k: v for k, v in info.items() if k != "options"}})
            if self.stage == "distill":
                n_student = len(self.model.state_dict())
                print(f"[train] student inherited {len(self.inherited)}/{n_student} tensors from the teacher "
                      f"{self.teacher_path} (fresh: radar VFE first layer, CMA, shape mismatches)",
                      flush=True)
            print(f"[train] stage {self.stage} ({self.modality}), config {self.cfg.name} "
                  f"(digest {self.cfg.digest()[:12]}), {len(self.dataset)} samples, batch "
                  f"{self.batch_size} x {self.world} process(es), {self.iters_per_epoch} it/epoch, epochs "
                  f"{self.start_epoch + 1}..{self.epochs}, device {self.device}, AMP {self.amp}, "
                  f"AFD {self.use_afd}, PFD {self.use_pfd}", flush=True)
        for epoch in range(self.start_epoch, self.epochs):
            stats = self.train_epoch(epoch)
            if self.is_main:
                path = self._save_epoch(epoch)
                self.log.write({"type": "epoch", "stage": self.stage, "epoch": epoch + 1, **stats,
                                "lr": self.optimizer.param_groups[0]["lr"], "checkpoint": str(path)})
                print(f"[train] epoch {epoch + 1}/{self.epochs}: loss {stats.get('loss', float('nan')):.4f} "
                      f"(det {stats.get('det', float('nan')):.4f}, afd {stats.get('afd', 0.0):.4f}, "
                      f"pfd {stats.get('pfd', 0.0):.4f}), {stats['epoch_time_s']:.1f} s, "
                      f"{stats['samples_per_s']:.2f} samples/s", flush=True)
            if self.distributed:
                dist.barrier()
        if self.opts.bn_recalibrate > 0 and self.start_epoch < self.epochs:
            key = "lidar" if self.modality == "lidar" else "radar"

            def forward(b: Mapping[str, Any]) -> Any:
                return self.model(b[key].to(self.device, non_blocking=True), len(b["tokens"]))

            used = recalibrate_batchnorm(self.model, self.loader, forward, self.opts.bn_recalibrate)
            if self.distributed:  # every rank saw different batches: average the statistics
                for m in self.model.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        for buf in (m.running_mean, m.running_var):
                            dist.all_reduce(buf)
                            buf /= self.world
            if self.is_main:
                print(f"[train] BatchNorm statistics re-estimated over {used} batches", flush=True)
        if self.is_main:
            save_checkpoint(final, self.model, self.cfg, self.modality,
                            {**self._run_signature(), "epoch": self.epochs, "teacher": self.teacher_path,
                             "inherited": len(self.inherited)})
        if self.distributed:
            dist.barrier()
        return final


def train(cfg: Config, stage: str, dataroot: str | os.PathLike, version: str, split: str,
          out: str | os.PathLike, **options: Any) -> Path:
    """Train one stage (see :class:`TrainOptions` for the keyword options); returns the path of
    the final checkpoint ``out/final.pt``."""
    opts = TrainOptions(stage=stage, dataroot=str(dataroot), version=version, split=split, out=str(out),
                        **{k: (str(v) if isinstance(v, os.PathLike) else v) for k, v in options.items()})
    return Trainer(cfg, opts).run()


# --------------------------------------------------------------------------------------------
# CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", required=True, help="config variant name (lite, paper) or YAML path")
    p.add_argument("--stage", required=True, choices=STAGES)
    p.add_argument("--dataroot", required=True, help="nuScenes-format dataroot")
    p.add_argument("--version", required=True, help="dataset version, e.g. v1.0-trainval, v1.0-synth")
    p.add_argument("--split", required=True, help="training split (predefined or in <version>/splits.json)")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--teacher", help="LiDAR teacher checkpoint (stage distill)")
    p.add_argument("--no-cma", dest="cma", action="store_false", help="radar model without CMA")
    p.add_argument("--no-afd", dest="afd", action="store_false", help="distill without L_AFD")
    p.add_argument("--no-pfd", dest="pfd", action="store_false", help="distill without L_PFD")
    p.add_argument("--epochs", type=int, help="default: the config's train.epochs")
    p.add_argument("--batch-size", type=int, help="per process; default: the config's train.batch_size")
    p.add_argument("--resume", action="store_true", help="continue from the newest epoch checkpoint in --out")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (torchrun: the local rank's GPU)")
    p.add_argument("--max-samples", type=int, help="train on the first N samples of the split")
    p.add_argument("--seed", type=int, help="default: the config's train.seed")
    p.add_argument("--num-workers", type=int,
                   help="DataLoader workers; default: the config's train.num_workers")
    p.add_argument("--no-augment", dest="augment", action="store_false", help="disable global augmentation")
    p.add_argument("--lr", type=float, help="max learning rate of the one-cycle schedule (default: config)")
    p.add_argument("--keep-checkpoints", type=int, default=3, help="epoch checkpoints kept")
    p.add_argument("--overwrite", action="store_true", help="replace a previous run in --out")
    p.add_argument("--threads", type=int, help="torch CPU threads (torch.set_num_threads)")
    p.add_argument("--no-progress", dest="show_progress", action="store_false", help="no tqdm progress bar")
    p.add_argument("--bn-recalibrate", type=int, default=32,
                   help="re-estimate BatchNorm statistics over this many training batches at the end "
                   "(0: off)")
    return p


def main(argv: Iterable[str] | None = None) -> int:
    args = build_parser().parse_args(None if argv is None else list(argv))
    cfg = load_config(args.config)
    if args.threads:
        torch.set_num_threads(args.threads)
    fixed = ("config", "stage", "dataroot", "version", "split", "out", "threads")
    kw = {k: v for k, v in vars(args).items() if k not in fixed}
    try:
        path = train(cfg, args.stage, args.dataroot, args.version, args.split, args.out, **kw)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if _dist_env()[1] == 0:
        print(f"[train] final checkpoint: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
