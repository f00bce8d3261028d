"""CAT supervised fine-tuning on TRL's SFTTrainer.

The only change to stock TRL is the loss: per sequence, log p = sum of the completion's token
log-probs (EOS included), and the loss is the strategy's -log S(p), whose gradient is the CE gradient
times one detached weight w = p S'(p)/S(p). With the standard strategy this is exactly TRL's loss.
"""

from __future__ import annotations

import torch
from trl import SFTTrainer

from ..strategies import Standard, Strategy


def reduce_sequence_losses(per_seq: torch.Tensor, n_tokens: torch.Tensor, reduction: str,
                           num_items_in_batch=None) -> torch.Tensor:
    """Reduce per-sequence losses L_i over a micro-batch.

    token_mean:    sum_i L_i / (number of supervised tokens; TRL's num_items_in_batch when given, which
                   spans the whole accumulation window). For the standard strategy, L_i = -sum_t log p_t,
                   so this is TRL's token-mean cross-entropy.
    sequence_mean: sum_i L_i / B, the batch sum of per-sequence (summed) losses over the number of
                   sequences, as the authors' code reduces it. (Not mean_i (L_i / T_i): that would
                   reweight each sequence by 1 / T_i, its number of supervised tokens.)
    """
    if reduction == "token_mean":
        denom = n_tokens.sum() if num_items_in_batch is None else num_items_in_batch
        return per_seq.sum() / torch.as_tensor(denom, device=per_seq.device).clamp(min=1)
    if reduction == "sequence_mean":
        return per_seq.mean()  # sum_i L_i / B
    raise ValueError(f"reduction must be token_mean or sequence_mean, got {reduction!r}")


class CatSFTTrainer(SFTTrainer):
    """SFTTrainer whose loss is the strategy's CAT loss on the summed completion log-prob."""

    def __init__(self, *args, strategy: Strategy | None = None, reduction: str = "token_mean", **kwargs):
        super().__init__(*args, **kwargs)
        self.strategy = strategy or Standard()
        self.reduction = reduction

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        inputs["use_cache"] = False
        outputs = model(**inputs, fused_lm_head=True)  # TRL's fused head: per-token log-probs of the labels
        label_mask = outputs.label_mask
        log_p = outputs.log_probs.sum(dim=-1)  # zero on ignored positions: a sum over the completion
        n_tokens = label_mask.sum(dim=-1)
        per_seq = self.strategy.sft_loss(log_p)
        loss = reduce_sequence_losses(per_seq, n_tokens, self.reduction, num_items_in_batch)
        if self.reduction == "token_mean":
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes  # as stock TRL: DDP averages the gradients
        elif self.model_accepts_loss_kwargs and num_items_in_batch is not None:
            loss = loss / self.current_gradient_accumulation_steps  # Trainer assumes it was scaled here

        with torch.no_grad():
            w = self.strategy.sft_weight(log_p.detach().double()).float()
            gathered = self.accelerator.gather_for_metrics(w)
            self._metrics[mode]["cat_weight/mean"].append(gathered.mean().item())
            self._metrics[mode]["cat_weight/lt_0.5"].append((gathered < 0.5).float().mean().item())
            seq_lp = self.accelerator.gather_for_metrics(log_p.detach().float())
            self._metrics[mode]["seq_prob/mean"].append(seq_lp.exp().mean().item())
            num_valid = self.accelerator.gather_for_metrics(label_mask.sum()).sum()
            num_correct = self.accelerator.gather_for_metrics(outputs.is_top1.sum()).sum()
            self._metrics[mode]["mean_token_accuracy"].append((num_correct / num_valid).item() if num_valid > 0 else 0.0)
        return (loss, outputs) if return_outputs else loss
