"""CAT reinforcement learning on TRL's GRPOTrainer.

Stock GRPO computes group-normalised advantages A_i = (r_i - mean r) / (std r + 1e-4) inside
`_generate_and_score_completions`, after gathering rewards from every process. We post-process the
advantages it returns (method.md, "The RL update"):

    A_i <- (A_i - penalty * [every rollout of the prompt is wrong]) * w_i

with w_i the strategy's detached per-rollout CAT weight (clipped, optionally batch mean-normalised).
A strategy whose strategy.estimator `replaces_advantages` (loo, pkpo, maxrl, best_sample, passk_training; the
registry in strategies/registry.py) gives A_i itself in place of TRL's normalised A_i (w_i = 1; the penalty
and clip still apply as configured). The trainer asks the strategy what it needs (needs_sequence_log_probs,
is_identity, state_dict, set_progress) and never which class it is.
Weights are applied AFTER normalisation: a per-group constant on rewards would be cancelled by the
group std. Scores (reward, correctness, vote key) and, when needed, sequence log-probs are gathered
across processes, so a prompt's group may straddle processes. With the standard strategy and no
penalty the advantages are untouched and training is exactly stock TRL.

The KL to the reference is method.md's beta * mean_t KL per completion (TRL's own KL term is switched
off inside `_compute_loss`, since with loss_type=luspo it is summed over the completion), and the
group-normalised advantage can be clipped to [-c, c] BEFORE the penalty and the CAT weight
(`advantage_clip`, the authors' protein runs; the weighted advantage A * w is left unclipped, so the
rare high-reward rollouts best-of-N boosts keep their boost). docs/fidelity.md lists every such convention.

Private TRL methods wrapped here (never copied): `_generate_and_score_completions`, `_compute_loss`,
`_get_per_token_logps_and_entropies` and `_save_checkpoint`; tests/test_trainers.py checks they still
exist, and still read the advantages after the log-prob forward, in the pinned TRL range. With
objective.use_vllm (TRL's colocated engine) the trainer shuts the engine down when training ends and, on
vLLM's CPU build, starts it with unpacked linear layers (training/vllm_rollouts.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any

import torch
from accelerate.utils import gather_object
from trl import GRPOTrainer

from ..strategies import Group, Standard, Strategy
from ..tasks.base import Score, Task
from .vllm_rollouts import dist_environment, shut_down_colocated_engine, unpacked_cpu_linears

STRATEGY_STATE = "cat_strategy_state.json"
_NOT_COLUMNS = {"prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric", "environments"}


class TaskReward:
    """A TRL reward function that scores through Task.score and keeps the full Scores.

    TRL passes the dataset's other columns as lists; they are reassembled into the row dict
    the task scores against. `last_scores` holds this process's Scores of the latest call.
    """

    __name__ = "task_reward"

    def __init__(self, task: Task):
        self.task = task
        self.last_scores: list[Score] = []

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs) -> list[float]:
        columns = {k: v for k, v in kwargs.items() if k not in _NOT_COLUMNS and isinstance(v, list)}
        scores = []
        for i, completion in enumerate(completions):
            row = {k: v[i] for k, v in columns.items()}
            row["prompt"] = prompts[i]
            text = completion if isinstance(completion, str) else completion[-1]["content"]
            scores.append(self.task.score(row, text))
        self.last_scores = scores
        return [s.reward for s in scores]


def cat_advantages(advantages: torch.Tensor, weights: torch.Tensor, all_wrong: torch.Tensor,
                   penalty: float) -> torch.Tensor:
    """(A - penalty * all_wrong) * w, elementwise over rollouts (all tensors the same shape).

    The all-wrong penalty (majority runs) pushes down every rollout of a prompt no rollout solved,
    where group normalisation alone gives zero advantage. Our choice: it is applied to the
    normalised advantage before the CAT weight, so the weight scales the whole learning signal.
    """
    adv = advantages - penalty * all_wrong.to(advantages.dtype)
    return adv * weights.to(advantages.dtype)


def kl_token_mean(per_token_logps: torch.Tensor, ref_per_token_logps: torch.Tensor,
                  mask: torch.Tensor) -> torch.Tensor:
    """Per completion: mean_t [exp(d_t) - d_t - 1], d_t = log pi_ref(t) - log pi(t), over its unmasked
    tokens (method.md's KL to the frozen reference; a token MEAN, so its pull does not grow with the
    completion's length). Shape [B]; differentiable in per_token_logps."""
    d = ref_per_token_logps - per_token_logps
    per_token = torch.exp(d) - d - 1.0
    mask = mask.to(per_token.dtype)
    return (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)


def _loss_mask(inputs) -> torch.Tensor:
    """The completion tokens TRL's loss counts (tool-call tokens masked out when present)."""
    mask = inputs["completion_mask"]
    return mask if "tool_mask" not in inputs else mask * inputs["tool_mask"]


@contextmanager
def positions_from_mask(model: torch.nn.Module):
    """Inside the block, a forward call of `model` that passes no position_ids gets
    position_ids = cumsum(attention_mask) - 1 (clamped at 0), as `generate` computes them.

    TRL left-pads prompts and scores rollouts with input_ids and attention_mask only; a model with
    absolute position embeddings (GPT-2, ProtGPT2, the tiny models) then puts a padded row's tokens at
    positions shifted by its padding, so the log-probs it trains on are not those of the policy that
    sampled them (the authors right-pad, so their positions are right). Rotary models see only relative
    positions and are unaffected either way.
    """

    def hook(module, args, kwargs):
        mask = kwargs.get("attention_mask")
        if kwargs.get("position_ids") is None and mask is not None and mask.dim() == 2:
            kwargs["position_ids"] = (mask.long().cumsum(-1) - 1).clamp(min=0)
        return args, kwargs

    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def needs_sequence_log_probs(strategy: Strategy) -> bool:
    """Whether the strategy's weights read the rollouts' sequence log-probs (a declared capability)."""
    return bool(strategy.needs_sequence_log_probs)


class CatGRPOTrainer(GRPOTrainer):
    """GRPOTrainer whose advantages carry the strategy's CAT weight. Pass `task=` instead of reward_funcs."""

    def __init__(self, *args, strategy: Strategy | None = None, task: Task | None = None,
                 all_wrong_penalty: float = 0.0, advantage_clip: float | None = None, **kwargs):
        if task is None:
            raise ValueError("CatGRPOTrainer needs task= (it scores rollouts through Task.score)")
        self.task_reward = TaskReward(task)
        kwargs.setdefault("reward_funcs", [self.task_reward])
        # A process group that exists before TRL's colocated vLLM engine starts (torchrun) must outlive it
        self._group_before_engine = torch.distributed.is_available() and torch.distributed.is_initialized()
        self._environment_before_engine = dist_environment()
        with unpacked_cpu_linears(kwargs.get("args")):  # the engine starts in here (training/vllm_rollouts.py)
            super().__init__(*args, **kwargs)
        self.strategy = strategy or Standard()
        self.all_wrong_penalty = float(all_wrong_penalty)
        self.advantage_clip = None if advantage_clip is None else float(advantage_clip)

    def train(self, *args, **kwargs):
        """TRL's train; a colocated vLLM engine (objective.use_vllm) is shut down when it ends, so the next
        branch's engine, or evaluation's, gets the memory back. Train once per trainer."""
        try:
            return super().train(*args, **kwargs)
        finally:
            self.close_rollout_engine()

    def close_rollout_engine(self) -> None:
        """Shut TRL's colocated vLLM engine down, if there is one (training/vllm_rollouts.py)."""
        shut_down_colocated_engine(getattr(self, "vllm_generation", None), self._group_before_engine,
                                   self._environment_before_engine)

    def _clip(self, adv: torch.Tensor) -> torch.Tensor:
        """TRL's group-normalised advantage clipped to [-c, c], before the penalty and the CAT weight (the
        authors' protein runs clip A, then multiply by w, and leave A * w unclipped)."""
        c = self.advantage_clip
        return adv if c is None else adv.clamp(-c, c)

    # -- the one hook ------------------------------------------------------------------------------
    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        output["advantages"] = self._clip(output["advantages"])  # the normalised A, before penalty and weight
        stock = self.strategy.is_identity and self.all_wrong_penalty == 0.0
        # every process's scores, gathered once, when the weights or the invalid-reason log need them
        needed = not stock or getattr(self.task_reward.task, "invalid_reasons", ())
        scores: list[Score] = gather_object(self.task_reward.last_scores) if needed else []
        self._log_invalid_reasons(scores)
        if stock:
            self._log_cat_metrics(torch.ones(1), torch.zeros(1))
            return output  # exactly stock TRL (when advantage_clip is None)
        mode = "train" if self.model.training else "eval"
        m = self.num_generations if mode == "train" else self.num_generations_eval
        chunks = [scores[i:i + m] for i in range(0, len(scores), m)]  # one prompt's rollouts each
        all_wrong = torch.cat([torch.full((len(c),), float(not any(s.correct for s in c))) for c in chunks])
        local = len(self.task_reward.last_scores)
        sl = slice(self.accelerator.process_index * local, (self.accelerator.process_index + 1) * local)
        adv = output["advantages"]

        deferred = needs_sequence_log_probs(self.strategy) and self._can_defer_sequence_weights(output)
        if deferred:  # the weight is applied in the loss forward (see below); the penalty now
            local_weights = torch.ones_like(adv)
            output[self._PENDING] = torch.ones_like(adv)  # a per-rollout tensor, so TRL splits it with the batch
            self._all_wrong_frac = all_wrong.double().mean().item()
        else:
            seq_log_probs = self._gathered_sequence_log_probs(output) if needs_sequence_log_probs(self.strategy) else None
            groups = [Group(rewards=torch.tensor([s.reward for s in c], dtype=torch.float64),
                            correct=torch.tensor([s.correct for s in c]),
                            vote_keys=[s.vote_key for s in c],
                            seq_log_probs=None if seq_log_probs is None else seq_log_probs[i * m:i * m + len(c)])
                      for i, c in enumerate(chunks)]
            if self.strategy.replaces_advantages:  # strategy.estimator != surrogate: its advantage replaces TRL's x w
                state = getattr(self, "state", None)  # TRL's TrainerState (absent in a bare trainer)
                if state is not None:  # the step a k schedule reads
                    self.strategy.set_progress(state.global_step, state.max_steps)
                own = self.strategy.rl_advantages(groups)
                adv, local_weights = self._clip(own[sl].to(adv.device, adv.dtype)), torch.ones_like(adv)
                self._log_cat_metrics(torch.ones(1), all_wrong)
                self._log_estimator_metrics(own, mode)
            else:
                weights = self.strategy.rl_weights(groups)
                local_weights = weights[sl].to(adv.device)
                self._log_cat_metrics(weights, all_wrong)
        output["advantages"] = cat_advantages(adv, local_weights, all_wrong[sl].to(adv.device), self.all_wrong_penalty)
        return output

    # -- the paper's Pass@N estimator without an extra forward pass --------------------------------------
    # p_i = exp(old-policy log-prob of rollout i). With one optimizer step per generation batch the old
    # policy IS the current one, so the log-probs the loss forward computes anyway give p_i; a weight
    # that depends only on its own rollout (no batch mean-normalisation) can then be applied right
    # there, in `_get_per_token_logps_and_entropies`, before `_compute_loss` reads the advantages.
    # Otherwise `_gathered_sequence_log_probs` runs one extra no-grad forward (about +24% per step on
    # the tiny CPU model, benchmarks/rl_step.py). tests/test_trainers.py checks both paths agree.
    _PENDING = "cat_sequence_weight_pending"
    defer_sequence_weights = True

    def _can_defer_sequence_weights(self, output) -> bool:
        return (self.defer_sequence_weights and not self.strategy.mean_normalize and self.num_iterations == 1
                and output.get("old_per_token_logps") is None and self.model.training)

    def _compute_loss(self, model, inputs):
        self._loss_inputs = inputs if inputs.pop(self._PENDING, None) is not None else None
        self._loss_logps, self._in_loss_forward = None, True
        # TRL adds beta * KL per token and, with loss_type=luspo, SUMS it over the completion (L times the
        # paper's term). Its KL is switched off here and the paper's one added instead (kl_loss below).
        beta, self.beta = self.beta, 0.0
        try:
            loss = super()._compute_loss(model, inputs)
        finally:
            self.beta, self._loss_inputs, self._in_loss_forward = beta, None, False
        if beta != 0.0:
            loss = loss + beta * self._kl_loss(inputs)
        return loss

    def _kl_loss(self, inputs) -> torch.Tensor:
        """mean over completions of kl_token_mean (method.md), scaled for gradient accumulation as TRL's
        luspo policy term is (a micro-batch mean divided by the accumulation steps)."""
        logps, self._loss_logps = self._loss_logps, None
        kl = kl_token_mean(logps, inputs["ref_per_token_logps"], _loss_mask(inputs)).mean()
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["kl"].append(self.accelerator.gather(kl.detach()).mean().item())
        return kl / (self.current_gradient_accumulation_steps if mode == "train" else 1.0)

    def _get_per_token_logps_and_entropies(self, model, *args, **kwargs):
        with positions_from_mask(model):  # left-padded prompts scored at the positions they were sampled at
            out = super()._get_per_token_logps_and_entropies(model, *args, **kwargs)
        if getattr(self, "_in_loss_forward", False):
            self._loss_logps = out[0]  # the loss forward's (differentiable) log-probs, for the KL term
        inputs, self._loss_inputs = getattr(self, "_loss_inputs", None), None
        if inputs is not None:  # the loss forward of a deferred batch: weight its advantages now
            seq = (out[0].detach() * _loss_mask(inputs)).sum(dim=-1).double().cpu()
            n = len(seq)
            group = Group(rewards=torch.zeros(n), correct=torch.zeros(n, dtype=torch.bool), seq_log_probs=seq)
            weights = self.strategy.rl_weights([group])
            inputs["advantages"] = inputs["advantages"] * weights.to(inputs["advantages"].device,
                                                                      inputs["advantages"].dtype)
            self._log_cat_metrics(weights, torch.full((1,), getattr(self, "_all_wrong_frac", 0.0)))
        return out

    def _gathered_sequence_log_probs(self, output) -> torch.Tensor:
        """Summed old-policy log-probs of each completion, for every process's rollouts."""
        completion_ids, completion_mask = output["completion_ids"], output["completion_mask"]
        per_token = output.get("old_per_token_logps")
        if per_token is None:
            input_ids = torch.cat([output["prompt_ids"], completion_ids], dim=1)
            attention_mask = torch.cat([output["prompt_mask"], completion_mask], dim=1)
            with torch.no_grad():
                per_token, _, _ = self._get_per_token_logps_and_entropies(
                    self.model, input_ids, attention_mask, completion_ids.size(1),
                    batch_size=self.args.per_device_train_batch_size)
        seq = (per_token * completion_mask).sum(dim=-1)
        return self.accelerator.gather(seq).detach().double().cpu()

    def _log_cat_metrics(self, weights: torch.Tensor, all_wrong: torch.Tensor) -> None:
        mode = "train" if self.model.training else "eval"
        w = weights.double()
        self._metrics[mode]["cat_weight/mean"].append(w.mean().item())
        self._metrics[mode]["cat_weight/max"].append(w.max().item())
        self._metrics[mode]["cat_weight/lt_0.5"].append((w < 0.5).double().mean().item())
        self._metrics[mode]["all_wrong_frac"].append(all_wrong.double().mean().item())

    def _log_estimator_metrics(self, own: torch.Tensor, mode: str) -> None:
        """<estimator>_adv/nonzero_frac (the share of rollouts that move the policy), /abs_mean and /max, and
        estimator_k (k this step: strategy.n or the k schedule's value), for an estimator that replaces the
        advantages."""
        name, own = self.strategy.estimator, own.double()
        self._metrics[mode][f"{name}_adv/nonzero_frac"].append((own != 0).double().mean().item())
        self._metrics[mode][f"{name}_adv/abs_mean"].append(own.abs().mean().item() if own.numel() else 0.0)
        self._metrics[mode][f"{name}_adv/max"].append(own.max().item() if own.numel() else 0.0)
        self._metrics[mode]["estimator_k"].append(float(self.strategy.current_k()))

    def _log_invalid_reasons(self, scores: Sequence[Score]) -> None:
        """invalid/<reason>: the share of this step's rollouts (every process) invalid for that reason, for
        tasks whose scores name one (protein); nothing for tasks that never do."""
        reasons = [s.invalid for s in scores]
        names = getattr(self.task_reward.task, "invalid_reasons", ())
        if not reasons or not names:
            return
        mode = "train" if self.model.training else "eval"
        for reason in names:
            self._metrics[mode][f"invalid/{reason}"].append(sum(r == reason for r in reasons) / len(reasons))

    # -- resumable strategy state (Strategy.state_dict: the best-of-N reward history) ---------------------
    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        state = self.strategy.state_dict()
        if state and self.args.should_save:
            folder = os.path.join(self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}")
            with open(os.path.join(folder, STRATEGY_STATE), "w") as f:
                json.dump(state, f)

    def load_strategy_state(self, checkpoint: str) -> None:
        path = os.path.join(checkpoint, STRATEGY_STATE)
        if os.path.exists(path):
            with open(path) as f:
                self.strategy.load_state_dict(json.load(f))
