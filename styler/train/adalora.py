"""AdaLoRA (Zhang et al. 2023): LoRA in SVD form, P·diag(E)·Q per layer, whose rank budget shrinks
during training from `init_rank` to `target_rank` per layer on average, spent where the gradient
says the triplets matter. Built on peft's AdaLoraModel / RankAllocator (peft 0.21, read in
peft/tuners/adalora/); the loop calls `after_step` after every optimizer step, before the gradients
are cleared, which is where peft's `update_and_allocate` must run.

What peft leaves to the caller, done here:
- One allocator for everything trained: the UNet and (with --text-encoder) the text encoder are
  wrapped in one ModuleDict, so their layers share one budget.
- The orthogonality penalty: AdaLoraModel.forward adds it only to an output that has a `.loss`,
  which a UNet's does not; `regularisation()` is the same penalty (mean over every P and Q of
  ‖PᵀP − I‖_F / ‖QQᵀ − I‖_F, times orth_reg_weight) and the loop adds it to the loss.
- Checkpoints: the allocator's sensitivity EMAs and the current masks are saved with the weights
  (peft keeps them only in memory), so a resumed run prunes exactly as an uninterrupted one.
- The saved file is a plain LoRA: per layer, the surviving triplets only (rank_pattern), with
  down = Q·diag(E) (E folded in), up = P, and alpha = r'·scaling/(ranknum + 1e-5), so that
  (alpha/r')·up·down is peft's ΔW = P·(Q∘E)·scaling/(ranknum + 1e-5).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from .config import TEXT_TARGETS, TrainConfig
from .methods import Method, _freeze

DEFAULT_TINIT = 0.1
DEFAULT_TFINAL = 0.2
DEFAULT_INTERVAL = 1
DEFAULT_ORTH_REG = 0.5
DEFAULT_BETA = 0.85
ADAPTER = "default"  # peft's adapter name
OPTIONS = ("adalora_init_rank", "adalora_target_rank", "adalora_tinit", "adalora_tfinal", "adalora_interval",
           "adalora_orth_reg", "adalora_beta1", "adalora_beta2")


def ranks(cfg: TrainConfig) -> tuple[int, int]:
    """(init rank, target rank): the target defaults to --rank, the start to 1.5 × the target."""
    target = cfg.adalora_target_rank if cfg.adalora_target_rank is not None else cfg.rank
    init = cfg.adalora_init_rank if cfg.adalora_init_rank is not None else max(target + 1, round(1.5 * target))
    return init, target


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def validate_adalora(cfg: TrainConfig) -> None:
    """The checks that need neither the model nor the step count (config.validate calls this)."""
    if cfg.method != "adalora":
        given = [k for k in OPTIONS if getattr(cfg, k) is not None]
        if given:
            raise UsageError(f"{_flag(given[0])} applies to --method adalora, not {cfg.method}; "
                             f"add --method adalora or drop it")
        return

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise UsageError(message)

    init, target = ranks(cfg)
    need(target >= 1, f"--adalora-target-rank must be >= 1 (got {target})")
    need(init > target, f"--adalora-init-rank {init} must be larger than the target rank {target} (AdaLoRA prunes "
         f"from one to the other); raise --adalora-init-rank or lower --adalora-target-rank/--rank")
    tinit, tfinal = _fractions(cfg)
    need(math.isfinite(tinit) and 0 <= tinit < 1, f"--adalora-tinit is a fraction of the steps, >= 0 and < 1 (got {tinit})")
    need(math.isfinite(tfinal) and 0 < tfinal < 1, f"--adalora-tfinal is a fraction of the steps, > 0 and < 1 (got {tfinal})")
    need(tinit + tfinal < 1, f"--adalora-tinit {tinit:g} + --adalora-tfinal {tfinal:g} leave no steps to prune the "
         f"ranks in; keep their sum below 1 (defaults {DEFAULT_TINIT:g} and {DEFAULT_TFINAL:g})")
    interval = cfg.adalora_interval if cfg.adalora_interval is not None else DEFAULT_INTERVAL
    need(interval >= 1, f"--adalora-interval must be >= 1 step (got {interval})")
    orth = cfg.adalora_orth_reg if cfg.adalora_orth_reg is not None else DEFAULT_ORTH_REG
    need(math.isfinite(orth) and orth >= 0, f"--adalora-orth-reg must be >= 0 and finite (got {orth}); 0.5 is peft's default")
    for key in ("adalora_beta1", "adalora_beta2"):
        beta = getattr(cfg, key)
        need(beta is None or 0 < beta < 1, f"{_flag(key)} must be between 0 and 1, exclusive (got {beta}); 0.85 is usual")
    need(not cfg.dora, "--dora cannot be combined with --method adalora (peft's AdaLoRA has no DoRA); drop one of them")
    need(cfg.processes == 1, f"--method adalora trains in one process: each process would allocate the ranks from "
         f"its own gradients, and styler does not keep them in step; drop --processes {cfg.processes} (or the launcher)")


def _fractions(cfg: TrainConfig) -> tuple[float, float]:
    return (cfg.adalora_tinit if cfg.adalora_tinit is not None else DEFAULT_TINIT,
            cfg.adalora_tfinal if cfg.adalora_tfinal is not None else DEFAULT_TFINAL)


@dataclass(frozen=True)
class Schedule:
    """The rank schedule in steps. peft counts steps from 0 (the step just taken): the budget
    stays at the start until step `tinit`, shrinks cubically until `total - tfinal`, where the
    final allocation is made, and then stays fixed."""

    init_rank: int
    target_rank: int
    total: int
    tinit: int
    tfinal: int
    interval: int

    def describe(self) -> str:
        """The schedule in the 1-based steps the panel shows."""
        prune_end = self.total - self.tfinal
        prune = (f"{self.tinit + 2}–{prune_end} prune (every {self.interval}), " if prune_end >= self.tinit + 2
                 else "")
        rest = f", {prune_end + 2}–{self.total} train them" if prune_end + 2 <= self.total else ""
        return (f"adalora: ranks {self.init_rank} → {self.target_rank} per layer on average; steps 1–{self.tinit + 1} "
                f"warm up, {prune}{prune_end + 1} fixes the ranks{rest}")


def schedule(cfg: TrainConfig, total_steps: int) -> Schedule:
    """The run's schedule, or a UsageError when its steps leave no pruning phase."""
    init, target = ranks(cfg)
    tinit_f, tfinal_f = _fractions(cfg)
    tinit, tfinal = round(tinit_f * total_steps), max(1, round(tfinal_f * total_steps))
    interval = cfg.adalora_interval if cfg.adalora_interval is not None else DEFAULT_INTERVAL
    if tinit >= total_steps - tfinal:  # peft's own condition (AdaLoraConfig.__post_init__)
        raise UsageError(f"--method adalora over {total_steps} steps: {tinit} warm-up and {tfinal} final steps leave "
                         f"none to prune the ranks in; give more --steps or a smaller --adalora-tinit/--adalora-tfinal")
    return Schedule(init, target, total_steps, tinit, tfinal, interval)


class AdaLoraMethod(Method):
    name = "adalora"

    def __init__(self, cfg: TrainConfig, total_steps: int):
        super().__init__(cfg)
        self.plan = schedule(cfg, total_steps)

    # -- setup ------------------------------------------------------------------------------
    def prepare(self, pipe) -> None:
        import torch
        from peft import AdaLoraConfig
        from peft.tuners.adalora import AdaLoraModel

        self.pipe = pipe
        _freeze(pipe)
        cfg, plan = self.cfg, self.plan
        parts = {"unet": pipe.unet}
        targets = list(cfg.unet_target_modules())
        if cfg.text_encoder:
            parts["text_encoder"] = pipe.text_encoder
            targets += list(TEXT_TARGETS)
        self.box = torch.nn.ModuleDict(parts)  # one model, so one rank budget across the components
        self.config = AdaLoraConfig(
            init_r=plan.init_rank, target_r=plan.target_rank, total_step=plan.total, tinit=plan.tinit,
            tfinal=plan.tfinal, deltaT=plan.interval, lora_alpha=self.lora_alpha,
            beta1=cfg.adalora_beta1 if cfg.adalora_beta1 is not None else DEFAULT_BETA,
            beta2=cfg.adalora_beta2 if cfg.adalora_beta2 is not None else DEFAULT_BETA,
            orth_reg_weight=cfg.adalora_orth_reg if cfg.adalora_orth_reg is not None else DEFAULT_ORTH_REG,
            target_modules=targets, init_lora_weights=True)
        try:
            self.tuner = AdaLoraModel(self.box, self.config, ADAPTER)
        except ValueError as exc:  # peft: none of the target modules exist in this model
            raise UsageError(f"--targets {cfg.targets}: {exc}") from None
        self.allocator = self.tuner.rankallocator
        for p in self._params():  # trainable weights stay fp32 under mixed precision (the loop autocasts)
            p.data = p.data.float()
        self.layers = {name: m for name, m in self.box.named_modules()
                       if hasattr(m, "lora_E") and ADAPTER in getattr(m, "lora_E", {})}
        # the allocator's state exists from the start (peft makes the same zeros at its first update),
        # so every checkpoint holds the same tensors
        self._allocator_state()
        self.masks = {f"{name}.lora_E.{ADAPTER}": torch.ones(plan.init_rank) for name in self.layers}

    @property
    def lora_alpha(self) -> float:
        """peft scales ΔW by lora_alpha / ranknum (ranknum = the init rank): alpha defaults to the
        init rank, i.e. scale 1 as a LoRA's default alpha = rank."""
        return float(self.cfg.alpha) if self.cfg.alpha is not None else float(self.plan.init_rank)

    def _params(self, component: str | None = None) -> list:
        parts = [component] if component else list(self.box.keys())
        return [p for c in parts for p in self.box[c].parameters() if p.requires_grad]

    def _allocator_state(self) -> dict:
        """name → tensor of the allocator's EMAs (re-created as zeros after peft's reset at the
        final allocation: they are not used again)."""
        import torch

        out = {}
        for n, p in self.box.named_parameters():
            if "lora_" in n and ADAPTER in n:  # what RankAllocator.update_ipt scores
                for kind in ("exp_avg_ipt", "exp_avg_unc"):
                    table = getattr(self.allocator, kind)
                    if n not in table:
                        table[n] = torch.zeros_like(p)
                    out[f"adalora.{kind}.{n}"] = table[n]
                self.allocator.ipt.setdefault(n, torch.zeros_like(p))
        return out

    # -- the loop's interface -----------------------------------------------------------------
    def param_groups(self) -> list[dict]:
        groups = [{"params": self._params("unet"), "lr": self.cfg.lr}]
        if self.cfg.text_encoder:
            groups.append({"params": self._params("text_encoder"), "lr": self.cfg.effective_lr_text})
        return groups

    def trainable(self) -> dict:
        out = {n: p for n, p in self.box.named_parameters() if p.requires_grad}
        out.update(self._allocator_state())
        out.update({f"adalora.mask.{n}": m for n, m in self.masks.items()})
        return out

    def regularisation(self):
        """orth_reg_weight × the mean of ‖Q Qᵀ − I‖_F and ‖Pᵀ P − I‖_F over every layer (peft's
        AdaLoraModel.forward penalty, which never reaches a UNet's output)."""
        import torch

        weight = self.config.orth_reg_weight
        if not weight:
            return None
        terms = []
        for m in self.layers.values():
            q, p = m.lora_A[ADAPTER], m.lora_B[ADAPTER]
            for cov in (q @ q.T, p.T @ p):
                terms.append(torch.linalg.matrix_norm(cov - torch.eye(cov.shape[0], device=cov.device, dtype=cov.dtype)))
        return weight * torch.stack(terms).mean()

    def after_step(self, step: int) -> None:
        """Score the triplets from this step's gradients and mask to the budget (peft's
        update_and_allocate, `step` counted from 0); keep the masks for checkpoints and the panel."""
        import torch

        self.tuner.update_and_allocate(step)
        pattern = self.config.rank_pattern
        if pattern:
            with torch.no_grad():
                for n, mask in self.masks.items():
                    mask.copy_(torch.tensor(pattern[n], dtype=mask.dtype))

    def after_restore(self) -> None:
        """A checkpoint put the masks back: peft's rank_pattern follows them (in the final phase
        peft masks by it; before, it only reports)."""
        self.config.rank_pattern = {n: m.bool().tolist() for n, m in self.masks.items()}

    # -- progress -------------------------------------------------------------------------------
    def budget(self, step: int):
        """The panel's RankBudget after `step` steps (1-based, as the panel counts)."""
        from .monitor import RankBudget

        plan = self.plan
        index = max(step - 1, 0)
        budget = self.allocator.budget_schedule(index)[0] if step else self.allocator.init_bgt
        phase = "warm-up" if index <= plan.tinit else "pruning" if index < plan.total - plan.tfinal else "fixed"
        allocated = int(sum(int(m.sum().item()) for m in self.masks.values()))
        return RankBudget(budget=int(budget), target=int(self.allocator.target_bgt), initial=int(self.allocator.init_bgt),
                          allocated=allocated, layers=len(self.masks), phase=phase)

    # -- the result -----------------------------------------------------------------------------
    def lora_layers(self) -> dict:
        """The trained ΔW as canonical LoRA layers: the surviving triplets of each layer (layers
        left with none are dropped: their ΔW is 0)."""
        import torch

        from ..adapters.lora import LoraLayer

        out = {}
        with torch.no_grad():
            for name, m in self.layers.items():
                component, module = name.split(".", 1)
                keep = self.masks[f"{name}.lora_E.{ADAPTER}"].bool().to(m.lora_E[ADAPTER].device)
                kept = int(keep.sum())
                if kept == 0:
                    continue
                q, e, p = m.lora_A[ADAPTER], m.lora_E[ADAPTER], m.lora_B[ADAPTER]
                down = (q[keep] * e[keep]).float().cpu()
                up = p[:, keep].float().cpu()
                weight = m.get_base_layer().weight
                if weight.dim() == 4:  # SVDConv2d: Q is [r, in·kh·kw]
                    down = down.reshape(kept, *weight.shape[1:])
                    up = up.reshape(*up.shape, 1, 1)
                scale = float(m.scaling[ADAPTER]) / float((m.ranknum[ADAPTER] + 1e-5).float())
                out[(component, module)] = LoraLayer(component, module, down.contiguous(), up.contiguous(), kept * scale)
        return out

    def final_ranks(self) -> dict[str, int]:
        """'component.module' → surviving rank, for every adapted layer (0: pruned away)."""
        return {name: int(self.masks[f"{name}.lora_E.{ADAPTER}"].sum().item()) for name in sorted(self.layers)}

    def results(self) -> dict:
        """What the run and adapter records keep about the allocation."""
        ranks_ = self.final_ranks()
        return {"adalora": {"init_rank": self.plan.init_rank, "target_rank": self.plan.target_rank,
                "total_rank": sum(ranks_.values()), "target_total": self.plan.target_rank * len(ranks_),
                "init_total": self.plan.init_rank * len(ranks_), "layers": len(ranks_), "ranks": ranks_,
                "schedule": {"tinit": self.plan.tinit, "tfinal": self.plan.tfinal, "interval": self.plan.interval,
                             "total": self.plan.total}}}

    def save(self, path: Path, metadata: dict[str, str]) -> Path:
        from ..adapters.formats import write_adapter
        from ..adapters.lora import AdapterData

        data = AdapterData("lora", layers=self.lora_layers())
        extra = {**metadata, "styler.adalora": json.dumps(self.results()["adalora"], sort_keys=True)}
        return write_adapter(data, path, "peft", extra)

    def summary(self) -> dict:
        out = {"trainable_params": sum(p.numel() for p in self._params())}
        if hasattr(self, "masks"):
            out.update(self.results())
        return out


def summary_line(result: dict) -> str:
    """One line about a finished allocation: totals and the spread of the ranks."""
    values = sorted(result["ranks"].values())
    median = values[len(values) // 2]
    pruned = sum(1 for v in values if v == 0)
    tail = f", {pruned} pruned away" if pruned else ""
    return (f"final ranks {result['total_rank']} over {result['layers']} layers (target {result['target_total']}, "
            f"from {result['init_total']}): min {values[0]}, median {median}, max {values[-1]}{tail}")
