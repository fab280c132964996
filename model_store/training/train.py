"""Contrastive sync training of SyncNet-lite.

Loss per batch of windows (B windows, T frames, offsets -K..K):
- window loss: for window i, softmax over every (audio window j, offset k) of the mean cosine
  between i's frames and j's audio at offset k; the target is (i, its true offset). This trains
  both the offset search (own audio, wrong offsets are negatives) and the matched-vs-mismatched
  score (other clips' audio, including the same speaker's other words, are negatives).
- frame loss: per frame, softmax over offsets of its own audio (sharpens short blocks).
- distillation (optional, ``distill_weight`` > 0 with a teacher): the window loss's row
  distribution over (audio window, offset) should match a frozen teacher's (an ensemble's mean
  cosines) on the same augmented windows, at the student's temperature: one network learns the
  averaged curves of several.
- frame distillation (optional, ``distill_frame_weight`` > 0 with a teacher): each frame's
  softmax over the offsets of its own audio (the frame loss's rows) should match the teacher's,
  at the student's temperature: the per-frame curves the window curves are means of.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from model_store.features import standardize_frames
from model_store.training.augment import augment
from model_store.training.data import Batch, WindowSampler
from worker.scoring.calibration import auc
from worker.scoring.offsets import (
    OffsetGrid,
    center_embeddings,
    offset_curve,
    similarity_by_offset,
    valid_pairs,
)
from worker.tracking.geometry import N_SHAPE_FEATURES


@dataclass
class TrainConfig:
    steps: int = 3000
    batch_size: int = 32
    frames_choices: tuple[int, ...] = (12, 16, 24)
    max_shift_frames: int = 6
    lr: float = 2e-3
    weight_decay: float = 1e-4
    frame_loss_weight: float = 0.5
    aug_prob: float = 0.5
    seed: int = 1234
    eval_every: int = 250
    eval_batches: int = 4  # x 32 windows per validation set (the committed bundle was chosen so)
    threads: int = 2
    # keep the weights of the best validation step instead of the last (the committed bundle's
    # recipe, as `make model --select-best`). The validation windows are the held-out dev
    # speakers', so selecting on them makes their numbers slightly optimistic (README says so)
    select_best: bool = True
    # Manifest.embedding_centering: the same share of the window mean is removed in training
    embedding_centering: float = 0.0
    # weight of the mouth-shape pretext loss: the frame CNN's features must predict the lip
    # landmarks' shape measures (geometry.mouth_shape), which do not depend on the speaker's looks
    shape_loss_weight: float = 0.0
    # weight of the cross-window matched-vs-mismatched loss (GlobalThreshold); 0 for 1.2.0
    global_loss_weight: float = 0.0
    # targets split between the two grid offsets around the true (sub-frame jittered) offset
    subframe_targets: bool = False
    # weight of the KL term towards a teacher's window-loss distribution (train(teacher=...))
    distill_weight: float = 0.0
    # weight of the KL term towards the teacher's per-frame offset distribution (frame_distill_loss)
    distill_frame_weight: float = 0.0
    # share of training windows whose lip landmarks are hidden from a network with the shape input
    # (SyncNetLite.add_shape), so that it stays right where frames come without landmarks
    shape_dropout: float = 0.3


def embed_batch(model, batch: Batch, audio_ctx: int, gen: torch.Generator | None, aug_prob: float,
                centering: float = 0.0, with_features: bool = False, frames: torch.Tensor | None = None,
                shape_ok: torch.Tensor | None = None):
    """``frames``: the batch's frames already augmented and standardised (shared with a teacher).
    ``shape_ok``: which frames' landmarks a shape-input network sees (default: the batch's)."""
    x = frames if frames is not None else input_frames(batch, gen, aug_prob)
    feats = batch_frame_features(model, batch, x, shape_ok)
    v = model.video_embed(feats)
    a = model.audio_embed(batch.mel)
    n_audio = batch.audio_ok.shape[1]
    a = a[:, audio_ctx: audio_ctx + n_audio]
    v, a = center_embeddings(v, batch.frame_ok, centering), center_embeddings(a, batch.audio_ok, centering)
    return (v, a, feats) if with_features else (v, a)


def batch_frame_features(net, batch: Batch, frames: torch.Tensor,
                         shape_ok: torch.Tensor | None = None) -> torch.Tensor:
    """(B, F, feat) per-frame features of a batch's standardised ``frames`` (B, F, H, W): the frame
    CNN's, plus the lip-shape view where ``net`` takes one (``shape_ok``: which frames' landmarks
    it sees; default the batch's)."""
    b, f, h, w = frames.shape
    feats = net.frame_features(frames.reshape(b * f, 1, h, w))
    if getattr(net, "shape_encoder", None) is not None:
        ok = batch.shape_ok if shape_ok is None else shape_ok
        feats = net.add_shape(feats, None if batch.shape is None else batch.shape.reshape(b * f, -1),
                              None if ok is None else ok.reshape(b * f))
    return feats.reshape(b, f, -1)


def shape_statistics(clips) -> tuple[np.ndarray, np.ndarray] | None:
    """Mean and standard deviation (+ 1e-3) of the clips' lip-shape measures over frames with a
    face; None when no clip has landmarks."""
    shapes = [c.shape[c.present] for c in clips if c.shape is not None and c.present.any()]
    if not shapes:
        return None
    allv = np.concatenate(shapes).astype(np.float64)
    return allv.mean(0), allv.std(0) + 1e-3


def shape_visible(batch: Batch, gen: torch.Generator, dropout: float) -> torch.Tensor | None:
    """The batch's landmark flags with a share ``dropout`` of its windows' landmarks hidden (all
    frames of a window alike, as a ROI stream either carries landmarks or does not)."""
    if batch.shape_ok is None:
        return None
    keep = torch.rand(batch.shape_ok.shape[0], generator=gen) >= dropout
    return batch.shape_ok & keep[:, None]


def input_frames(batch: Batch, gen: torch.Generator | None, aug_prob: float) -> torch.Tensor:
    x = batch.frames
    if gen is not None:
        x = augment(x, gen, aug_prob)
    return standardize_frames(x)


@torch.no_grad()
def teacher_embed(teacher, batch: Batch, audio_ctx: int, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A frozen dual encoder's unit embeddings of the batch (as the scorer computes them: an
    ensemble has no video_embed / audio_embed), (B, T, D) and (B, N, D)."""
    feats = batch_frame_features(teacher, batch, frames)  # a teacher sees every landmark there is
    v = F.normalize(teacher.video_head(feats.transpose(1, 2)).transpose(1, 2), dim=-1)
    mel = batch.mel if batch.teacher_mel is None else batch.teacher_mel  # it hears the full band
    a = F.normalize(teacher.audio_encoder(mel).transpose(1, 2), dim=-1)
    n_audio = batch.audio_ok.shape[1]
    return v, a[:, audio_ctx: audio_ctx + n_audio]


def cross_cosines(batch: Batch, k: int, v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """c[i, j, o]: mean cosine of window i's frames with window j's audio at offset o (over valid
    pairs; -1 where fewer than a third of the frames pair)."""
    span = 2 * k + 1
    t = v.shape[1]
    a_unf = a.unfold(1, span, 1)[:, :t]  # (B, T, D, span)
    ok_a = batch.audio_ok.unfold(1, span, 1)[:, :t]  # (B, T, span)
    dots = torch.einsum("itd,jtdk->ijtk", v, a_unf)
    wts = batch.frame_ok[:, None, :, None].float() * ok_a[None].float()
    c = (dots * wts).sum(2) / wts.sum(2).clamp_min(1.0)
    return torch.where(wts.sum(2) >= max(2, t // 3), c, torch.full_like(c, -1.0))


def distill_loss(c_student: torch.Tensor, c_teacher: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) of the window loss's rows (softmax over every audio window and
    offset), both at the student's current temperature (the teacher's cosines are a mean of its
    members', on the same scale)."""
    b = c_student.shape[0]
    s = scale.detach()
    log_p = F.log_softmax(s * 2.0 * c_student.reshape(b, -1), dim=1)
    q = F.softmax(s * 2.0 * c_teacher.reshape(b, -1), dim=1)
    return F.kl_div(log_p, q, reduction="batchmean")


def frame_distill_loss(sim_student: torch.Tensor, sim_teacher: torch.Tensor, ok: torch.Tensor,
                       scale: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) of each frame's softmax over its own audio's offsets (B, T, span),
    over the valid pairs ``ok`` only, averaged over frames with at least two valid offsets; both
    at the student's current temperature."""
    rows = ok.sum(2) >= 2
    if not bool(rows.any()):
        return sim_student.sum() * 0.0
    s = scale.detach()
    log_p = F.log_softmax((s * sim_student).masked_fill(~ok, -1e4)[rows], dim=1)
    q = F.softmax((s * sim_teacher).masked_fill(~ok, -1e4)[rows], dim=1)
    return F.kl_div(log_p, q, reduction="batchmean")


class ShapeProbe(torch.nn.Module):
    """Linear read-out of mouth-shape measures from frame features, for the pretext loss only (never
    saved in a bundle). Targets are standardised with the training clips' statistics."""

    def __init__(self, feat_dim: int, clips) -> None:
        super().__init__()
        stats = shape_statistics(clips)
        mean, std = stats if stats is not None else (np.zeros(N_SHAPE_FEATURES), np.full(N_SHAPE_FEATURES, 1e-3))
        self.register_buffer("mean", torch.from_numpy(mean).float())
        self.register_buffer("std", torch.from_numpy(std).float())
        self.fc = torch.nn.Linear(feat_dim, N_SHAPE_FEATURES)

    def loss(self, feats: torch.Tensor, batch: Batch) -> torch.Tensor:
        if batch.shape is None or not bool(batch.shape_ok.any()):
            return feats.sum() * 0.0
        ok = batch.shape_ok
        target = (batch.shape[ok].float() - self.mean) / self.std
        return F.smooth_l1_loss(self.fc(feats[ok]), target)


class GlobalThreshold(torch.nn.Module):
    """One threshold on the window cosine for every window of every clip: the matched-vs-mismatched
    control pools windows of many speakers, so a window's own audio at its true offset must beat
    another clip's audio at that audio's BEST offset (what the scorer's peak picks) with the same
    cut-off everywhere. The window loss only ranks within one window's row. Trainer-only (never
    saved in a bundle)."""

    def __init__(self) -> None:
        super().__init__()
        self.log_scale = torch.nn.Parameter(torch.tensor(2.3))
        self.bias = torch.nn.Parameter(torch.tensor(0.2))

    def loss(self, c: torch.Tensor, batch: Batch) -> torch.Tensor:
        b = c.shape[0]
        pos = c[torch.arange(b), torch.arange(b), batch.label]
        ids = torch.tensor(batch.clip_ids)
        other = ids[:, None] != ids[None, :]
        neg = c.max(dim=2).values[other]
        pos, neg = pos[pos > -1], neg[neg > -1]  # -1: too few valid pairs (batch_loss)
        if pos.numel() == 0 or neg.numel() == 0:
            return c.sum() * 0.0
        s = self.log_scale.exp().clamp(max=100.0)
        return 0.5 * (F.softplus(-s * (pos - self.bias)).mean() + F.softplus(s * (neg - self.bias)).mean())


def subframe_targets(label: torch.Tensor, frac: torch.Tensor, span: int) -> torch.Tensor:
    """(B,) offset indices and (B,) sub-frame parts of the true offset -> (B, span) target
    distributions: 1 - |frac| on the label and |frac| on the neighbour towards the true offset (a
    linear split between the two grid offsets that bracket it; all on the label at the grid's ends)."""
    b = label.shape[0]
    nb = label + torch.sign(frac).long()
    w = frac.abs().clamp(max=0.5) * ((nb >= 0) & (nb < span)).float()
    out = torch.zeros(b, span)
    out[torch.arange(b), label] = 1.0 - w
    out[torch.arange(b), nb.clamp(0, span - 1)] += w
    return out


def batch_loss(model, batch: Batch, k: int, v: torch.Tensor, a: torch.Tensor, frame_w: float,
               subframe: bool = False):
    """The window and frame losses. ``subframe``: the targets split between the two grid offsets
    around the true (jittered) offset instead of all on the nearest one."""
    grid = OffsetGrid(-k, k)
    b, t, _ = v.shape
    span = 2 * k + 1
    scale = model.logit_scale.exp().clamp(max=100.0)
    sim_own = similarity_by_offset(v, a, grid)  # (B, T, span)
    ok_own = valid_pairs(batch.frame_ok, batch.audio_ok, grid)
    c = cross_cosines(batch, k, v, a)
    logits = scale * 2.0 * c.reshape(b, b * span)
    lab = batch.label.view(b, 1, 1).expand(b, t, 1)
    true_ok = ok_own.gather(2, lab).squeeze(2)
    fl = scale * sim_own.masked_fill(~ok_own, -1e4)
    if subframe and batch.label_frac is not None:
        soft = subframe_targets(batch.label, batch.label_frac, span)  # (B, span)
        win_target = torch.zeros(b, b, span)
        win_target[torch.arange(b), torch.arange(b)] = soft
        win_loss = F.cross_entropy(logits, win_target.reshape(b, b * span))
        # per frame, weight only on offsets whose pair is valid (a masked logit is -1e4)
        frame_target = soft.view(b, 1, span) * ok_own
        frame_target = frame_target / frame_target.sum(2, keepdim=True).clamp_min(1e-9)
        fl_loss = F.cross_entropy(fl[true_ok], frame_target[true_ok]) if true_ok.any() else 0.0
    else:
        win_loss = F.cross_entropy(logits, torch.arange(b) * span + batch.label)
        fl_loss = (F.cross_entropy(fl[true_ok], batch.label.view(b, 1).expand(b, t)[true_ok])
                   if true_ok.any() else 0.0)
    return win_loss + frame_w * fl_loss, c, sim_own, ok_own


@torch.no_grad()
def evaluate(model, sampler: WindowSampler, n_frames: int, n_batches: int, batch_size: int, audio_ctx: int,
             centering: float = 0.0) -> dict:
    """Accuracy within +/-1 frame of the true offset, and matched-vs-mismatched AUC of the best
    mean cosine, on a fixed set of windows (the sampler's own seed)."""
    modes = [(m, m.training) for m in model.modules()]  # restored after: a frozen part stays in eval
    model.eval()
    k = sampler.k
    grid = OffsetGrid(-k, k)
    hits, n = 0, 0
    pos, neg = [], []
    for _ in range(n_batches):
        batch = sampler.sample(batch_size, n_frames, shift_prob=1.0)
        v, a = embed_batch(model, batch, audio_ctx, None, 0.0, centering)
        sim = similarity_by_offset(v, a, grid)
        ok = valid_pairs(batch.frame_ok, batch.audio_ok, grid)
        curve = offset_curve(sim, ok, min_pairs=max(1, n_frames // 2))
        cur = torch.nan_to_num(curve, nan=-2.0)
        best = cur.argmax(1)
        hits += int(((best - batch.label).abs() <= 1).sum())
        n += len(best)
        pos += cur.max(1).values.tolist()
        # mismatched: frames of window i with audio of window i+2 (another clip: pairs share clips)
        a_m = a.roll(2, dims=0)
        ok_m = valid_pairs(batch.frame_ok, batch.audio_ok.roll(2, dims=0), grid)
        cm = torch.nan_to_num(offset_curve(similarity_by_offset(v, a_m, grid), ok_m, max(1, n_frames // 2)), nan=-2.0)
        same = torch.tensor(batch.clip_ids) == torch.tensor(batch.clip_ids).roll(2)
        neg += cm.max(1).values[~same].tolist()
    for m, training in modes:
        m.train(training)
    return {"acc_pm1": hits / max(n, 1), "auc": auc(np.array(pos), np.array(neg)), "n": n}


def one_cycle(opt: torch.optim.Optimizer, max_lr: float, steps: int) -> torch.optim.lr_scheduler.OneCycleLR:
    """The learning-rate schedule: 5% warm-up, then cosine decay. OneCycleLR divides by (warm-up
    steps - 1), which is 0 for a 20-step run; short runs warm up for 1.5 steps instead."""
    warmup_steps = max(0.05 * steps, 1.5)
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=steps,
                                               pct_start=min(warmup_steps / steps, 0.9))


def train(model, train_sampler: WindowSampler, val_samplers: dict[str, WindowSampler], cfg: TrainConfig,
          audio_ctx: int, log=print, teacher=None, fixed_stats: tuple = ()) -> dict:
    """``fixed_stats``: modules kept in eval mode throughout, so that their batch-norm statistics
    do not move either (with their weights frozen, they compute exactly what they did before)."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    probe = ShapeProbe(model.frame_encoder.fc.out_features, train_sampler.clips) if cfg.shape_loss_weight > 0 else None
    threshold = GlobalThreshold() if cfg.global_loss_weight > 0 else None
    params = list(model.parameters()) + [p for m in (probe, threshold) if m is not None for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = one_cycle(opt, cfg.lr, cfg.steps)
    model.train()
    for part in fixed_stats:
        part.eval()
    t0 = time.time()
    history = []
    best = {"score": -1.0}
    best_state = None
    for step in range(1, cfg.steps + 1):
        n_frames = int(rng.choice(cfg.frames_choices))
        batch = train_sampler.sample(cfg.batch_size, n_frames)
        x = input_frames(batch, gen, cfg.aug_prob)
        seen = shape_visible(batch, gen, cfg.shape_dropout) if getattr(model, "shape_encoder", None) is not None else None
        v, a, feats = embed_batch(model, batch, audio_ctx, None, 0.0, cfg.embedding_centering, True, frames=x,
                                  shape_ok=seen)
        loss, c, sim_own, ok_own = batch_loss(model, batch, train_sampler.k, v, a, cfg.frame_loss_weight,
                                              cfg.subframe_targets)
        if teacher is not None and (cfg.distill_weight > 0 or cfg.distill_frame_weight > 0):
            scale = model.logit_scale.exp().clamp(max=100.0)
            v_t, a_t = teacher_embed(teacher, batch, audio_ctx, x)
            if cfg.distill_weight > 0:
                loss = loss + cfg.distill_weight * distill_loss(c, cross_cosines(batch, train_sampler.k, v_t, a_t), scale)
            if cfg.distill_frame_weight > 0:
                sim_t = similarity_by_offset(v_t, a_t, OffsetGrid(-train_sampler.k, train_sampler.k))
                loss = loss + cfg.distill_frame_weight * frame_distill_loss(sim_own, sim_t, ok_own, scale)
        if threshold is not None:
            loss = loss + cfg.global_loss_weight * threshold.loss(c, batch)
        if probe is not None:
            loss = loss + cfg.shape_loss_weight * probe.loss(feats, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        sched.step()
        if step % 50 == 0:
            log(f"step {step} loss {float(loss.detach()):.3f} scale {float(model.logit_scale.detach().exp()):.1f} "
                f"{(time.time() - t0) / step:.2f}s/step")
        if step % cfg.eval_every == 0 or step == cfg.steps:
            res = {name: evaluate(model, s, 25, cfg.eval_batches, 32, audio_ctx, cfg.embedding_centering)
                   for name, s in val_samplers.items()}
            summary = float(np.mean([r["acc_pm1"] + r["auc"] for r in res.values()]))
            history.append({"step": step, "elapsed_s": round(time.time() - t0, 1), **{
                f"{k}_{m}": round(v[m], 4) for k, v in res.items() for m in ("acc_pm1", "auc")}})
            log(f"eval step {step}: {history[-1]}")
            if summary > best["score"]:
                best = {"score": summary, "step": step}
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if cfg.select_best and best_state is not None:
        model.load_state_dict(best_state)
    else:
        best = {"step": cfg.steps}
    return {"history": history, "best_step": best.get("step"), "train_seconds": round(time.time() - t0, 1)}
