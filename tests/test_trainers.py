"""CAT trainers on TRL: the standard strategy is stock TRL exactly; CAT changes only the weight."""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import pytest
import torch
import trl
from trl import GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer

from cat_experiments.models import load_model_and_tokenizer
from cat_experiments.strategies import Majority, PassAtN, Standard
from cat_experiments.tasks.arithmetic import ArithmeticTask
from cat_experiments.tasks.base import Score
from cat_experiments.training.data import rl_dataset, sft_dataset
from cat_experiments.training.rl import CatGRPOTrainer, TaskReward, cat_advantages
from cat_experiments.training.sft import CatSFTTrainer, reduce_sequence_losses

MODEL = SimpleNamespace(name="tiny", builder="tiny_gpt2", chars="0123456789+-*/=()\\{}boxed .,\n", n_layer=1,
                        n_embd=32, n_head=2, n_positions=64, init_seed=0, load_in_4bit=False, lora=None,
                        gradient_checkpointing=False, trust_remote_code=False, path=None)
HW = SimpleNamespace(device="cpu", dtype="float32", load_in_4bit=False, gradient_checkpointing=False)


@pytest.fixture(scope="module")
def task():
    return ArithmeticTask(op="+", digits=1, n_train=64, n_test=8)


def load(tmp_path_factory):
    return load_model_and_tokenizer(MODEL, HW, tmp_path_factory.getbasetemp() / "cache")


def test_trl_private_methods_we_override_still_exist():
    assert trl.__version__.startswith("1.16"), "pyproject pins trl>=1.16,<1.17: re-check the overrides first"
    assert hasattr(GRPOTrainer, "_generate_and_score_completions")
    assert hasattr(GRPOTrainer, "_calculate_rewards")
    assert hasattr(GRPOTrainer, "_get_per_token_logps_and_entropies")
    assert hasattr(GRPOTrainer, "_save_checkpoint")
    src = inspect.getsource(GRPOTrainer._generate_and_score_completions)
    assert '"advantages": advantages' in src and "process_slice" in src
    assert "fused_lm_head=True" in inspect.getsource(SFTTrainer.compute_loss)
    # the deferred Pass@N weight relies on _compute_loss reading the advantages after its log-prob forward
    loss_src = inspect.getsource(GRPOTrainer._compute_loss)
    assert 0 < loss_src.index("self._get_per_token_logps_and_entropies(") < loss_src.index('inputs["advantages"]')


def sft_args(tmp_path, **kw):
    return SFTConfig(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=8, learning_rate=1e-2,
                     logging_steps=1, save_strategy="no", report_to="none", seed=7, use_cpu=True,
                     gradient_checkpointing=False, disable_tqdm=True, dataset_num_proc=None, bf16=False, **kw)


@pytest.mark.parametrize("accum", [1, 2])
def test_standard_sft_equals_stock_trl(task, tmp_path, tmp_path_factory, accum):
    ds = sft_dataset(task.train_rows(), use_chat_template=False)
    runs = []
    for cls, extra in [(SFTTrainer, {}), (CatSFTTrainer, {"strategy": Standard()})]:
        model, tok = load(tmp_path_factory)
        trainer = cls(model=model, args=sft_args(tmp_path / cls.__name__, gradient_accumulation_steps=accum),
                      train_dataset=ds, processing_class=tok, **extra)
        trainer.train()
        runs.append((model, [h["loss"] for h in trainer.state.log_history if "loss" in h]))
    (m1, l1), (m2, l2) = runs
    assert len(l1) == 3 and l1 == pytest.approx(l2, rel=1e-5)
    for (n, p1), p2 in zip(m1.named_parameters(), m2.parameters(), strict=True):
        assert torch.allclose(p1, p2, rtol=1e-5, atol=1e-7), n


def test_cat_sft_loss_and_gradient_are_the_weighted_ce(task, tmp_path, tmp_path_factory):
    model, tok = load(tmp_path_factory)
    ds = sft_dataset(task.train_rows()[:8], use_chat_template=False)
    strategy = PassAtN(4)
    trainer = CatSFTTrainer(model=model, args=sft_args(tmp_path), train_dataset=ds, processing_class=tok,
                            strategy=strategy)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(8)])
    loss = trainer.compute_loss(model, dict(batch))
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    # reference: plain forward, summed completion log-probs, weights by hand
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    token_lp = torch.log_softmax(logits.float(), -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask
    log_p = token_lp.sum(-1)
    w = strategy.sft_weight(log_p.detach()).float()
    s = -torch.expm1(4 * torch.log1p(-log_p.detach().double().exp()))  # 1 - (1-p)^4 without cancellation
    assert loss.item() == pytest.approx((-torch.log(s)).sum().item() / mask.sum().item(), rel=1e-4)
    ref = (w * -log_p).sum() / mask.sum()
    ref.backward()
    for g, p in zip(grads, model.parameters(), strict=True):
        assert torch.allclose(g, p.grad, rtol=1e-4, atol=1e-7)
    assert 0.0 < w.min().item() <= w.max().item() <= 1.0


def test_reductions():
    per_seq = torch.tensor([2.0, 6.0])
    n_tok = torch.tensor([2, 3])
    assert reduce_sequence_losses(per_seq, n_tok, "token_mean").item() == pytest.approx(8 / 5)
    assert reduce_sequence_losses(per_seq, n_tok, "token_mean", num_items_in_batch=10).item() == pytest.approx(0.8)
    # the authors' sequence mean: sum_i L_i / B (not mean_i L_i / T_i, which would give (1 + 2) / 2)
    assert reduce_sequence_losses(per_seq, n_tok, "sequence_mean").item() == pytest.approx((2 + 6) / 2)
    with pytest.raises(ValueError, match="reduction"):
        reduce_sequence_losses(per_seq, n_tok, "sum")


def grpo_args(tmp_path, **kw):
    return GRPOConfig(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=8, num_generations=4,
                      max_completion_length=6, learning_rate=1e-2, logging_steps=1, save_strategy="no",
                      report_to="none", seed=3, use_cpu=True, gradient_checkpointing=False, disable_tqdm=True,
                      loss_type="luspo", log_completions=False, bf16=False, **kw)


def test_standard_grpo_equals_stock_trl(task, tmp_path, tmp_path_factory):
    ds = rl_dataset(task.train_rows(), use_chat_template=False)
    params = []
    for kind in ("stock", "cat"):
        model, tok = load(tmp_path_factory)
        if kind == "stock":
            trainer = GRPOTrainer(model=model, args=grpo_args(tmp_path / kind), train_dataset=ds,
                                  processing_class=tok, reward_funcs=[TaskReward(task)])
        else:
            trainer = CatGRPOTrainer(model=model, args=grpo_args(tmp_path / kind), train_dataset=ds,
                                     processing_class=tok, task=task, strategy=Standard())
        trainer.train()
        params.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*params, strict=True):
        assert torch.equal(a, b)


def test_cat_grpo_multiplies_normalised_advantages(task, tmp_path, tmp_path_factory):
    model, tok = load(tmp_path_factory)
    ds = rl_dataset(task.train_rows(), use_chat_template=False)
    strategy = Majority(4, k=None, clip=10.0, mean_normalize=True)
    trainer = CatGRPOTrainer(model=model, args=grpo_args(tmp_path), train_dataset=ds, processing_class=tok,
                             task=task, strategy=strategy, all_wrong_penalty=0.5)
    rows = [dict(ds[i]) for i in range(2) for _ in range(4)]
    out = trainer._generate_and_score_completions(rows)
    scores = trainer.task_reward.last_scores
    r = torch.tensor([s.reward for s in scores]).view(2, 4)
    adv = (r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)
    groups_wrong = (~torch.tensor([s.correct for s in scores]).view(2, 4).any(1)).float()
    from cat_experiments.strategies import Group
    w = strategy.rl_weights([Group(rewards=r[g].double(), correct=torch.tensor([s.correct for s in scores[4 * g:4 * g + 4]]),
                                   vote_keys=[s.vote_key for s in scores[4 * g:4 * g + 4]]) for g in range(2)])
    expected = cat_advantages(adv.flatten(), w, groups_wrong.repeat_interleave(4), 0.5)
    assert torch.allclose(out["advantages"], expected.float(), atol=1e-5)


def test_cat_advantages_formula():
    a = torch.tensor([1.0, -1.0, 0.0, 0.0])
    out = cat_advantages(a, torch.tensor([2.0, 2.0, 0.5, 0.5]), torch.tensor([0.0, 0.0, 1.0, 1.0]), 0.5)
    assert out.tolist() == [2.0, -2.0, -0.25, -0.25]


def test_task_reward_reassembles_rows(task):
    reward = TaskReward(task)
    out = reward(prompts=["1+2=", "1+2="], completions=["\\boxed{3}", "\\boxed{4}"], answer=["3", "3"],
                 target=["\\boxed{3}", "\\boxed{3}"], trainer_state=None)
    assert out == [1.0, 0.0]
    assert [s.vote_key for s in reward.last_scores] == ["3", "4"]


class LengthTask(ArithmeticTask):
    """Rewards that vary on a random model (so advantages are not all zero)."""

    def score(self, row, completion):
        from cat_experiments.tasks.base import Score

        r = float(len(completion) % 3)
        return Score(reward=r, correct=r == 2.0, vote_key=str(len(completion)))


def test_sequence_weights_without_extra_forward_match_the_extra_forward_path(tmp_path, tmp_path_factory):
    task = LengthTask(op="+", digits=1, n_train=64, n_test=8)
    ds = rl_dataset(task.train_rows(), use_chat_template=False)
    params, advs = [], []
    for defer in (True, False, None):  # None: the standard strategy, to see that weights were applied
        model, tok = load(tmp_path_factory)
        strategy = Standard() if defer is None else PassAtN(4, weight_form="raw", p_estimator="sequence", clip=50.0)
        trainer = CatGRPOTrainer(model=model, args=grpo_args(tmp_path / str(defer)), train_dataset=ds,
                                 processing_class=tok, task=task, strategy=strategy)
        trainer.defer_sequence_weights = bool(defer)
        seen = []
        original = trainer._compute_loss

        def spy(model, inputs, original=original, seen=seen):
            loss = original(model, inputs)
            seen.append(inputs["advantages"].detach().clone())
            return loss

        trainer._compute_loss = spy
        trainer.train()
        params.append([p.detach().clone() for p in model.parameters()])
        advs.append(torch.cat(seen))
    assert advs[0].abs().sum() > 0 and not torch.allclose(advs[0], advs[2])
    assert torch.allclose(advs[0], advs[1], rtol=1e-5, atol=1e-7)
    for a, b, _ in zip(*params, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


# ---- issue 8: the paper's KL, the log-prob temperature, the advantage clip ------------------------------

def _loss_inputs(trainer, ds, n_prompts=2):
    rows = [dict(ds[i]) for i in range(n_prompts) for _ in range(trainer.num_generations)]
    inputs = trainer._generate_and_score_completions(rows)
    trainer.current_gradient_accumulation_steps = 1
    return inputs


def _completion_logps(model, inputs, temperature=1.0):
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
    att = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
    logits = model(input_ids=ids, attention_mask=att).logits[:, :-1] / temperature
    n = inputs["completion_ids"].size(1)
    return torch.log_softmax(logits.float(), -1)[:, -n:].gather(-1, inputs["completion_ids"].unsqueeze(-1)).squeeze(-1)


def test_kl_term_is_beta_times_the_per_completion_token_mean(task, tmp_path, tmp_path_factory):
    """method.md: beta * mean_t KL per completion (TRL's luspo alone would SUM it over the completion)."""
    model, tok = load(tmp_path_factory)
    ds = rl_dataset(task.train_rows(), use_chat_template=False)
    beta = 0.1
    trainer = CatGRPOTrainer(model=model, args=grpo_args(tmp_path, beta=beta), train_dataset=ds,
                             processing_class=tok, task=task, strategy=Standard())
    inputs = _loss_inputs(trainer, ds)
    inputs["completion_mask"][0, 2:] = 0  # completions of different lengths (3 tokens vs up to 6)
    inputs["completion_mask"][1, 4:] = 0
    inputs["advantages"] = torch.zeros_like(inputs["advantages"])  # the policy term is 0: only KL remains
    with torch.no_grad():  # move the policy away from the frozen reference, so the KL is not 0
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.train()
    mask = inputs["completion_mask"].float()
    lengths = mask.sum(-1)
    assert len(set(lengths.tolist())) > 1

    model.zero_grad()
    loss = trainer._compute_loss(model, dict(inputs))
    loss.backward()
    got = [p.grad.detach().clone() for p in model.parameters()]

    model.zero_grad()
    d = inputs["ref_per_token_logps"] - _completion_logps(model, inputs)
    per_token = torch.exp(d) - d - 1
    hand = beta * ((per_token * mask).sum(-1) / lengths).mean()
    hand.backward()
    assert hand.item() > 1e-4
    assert loss.item() == pytest.approx(hand.item(), rel=1e-4)
    for g, h in zip(got, [p.grad for p in model.parameters()], strict=True):
        assert torch.allclose(g, h, rtol=1e-3, atol=1e-7)
    # and it is not the summed form (longer completions pulled L times harder)
    summed = beta * (per_token * mask).sum(-1).mean()
    assert summed.item() > 1.5 * loss.item()


def test_logprob_temperature_scores_at_its_own_temperature(task, tmp_path, tmp_path_factory):
    from conftest import TINY, TINY_RL, compose

    from cat_experiments.training.args import grpo_config

    cfg = compose([*TINY, *TINY_RL, "objective=rl", "strategy=standard", "objective.temperature=2.0",
                   "objective.logprob_temperature=1.0"])
    args = grpo_config(cfg.objective, tmp_path, cfg)
    assert args.temperature == 1.0 and args.generation_kwargs == {"temperature": 2.0}
    assert args.disable_dropout is True
    model, tok = load(tmp_path_factory)
    ds = rl_dataset(task.train_rows(), use_chat_template=False)
    trainer = CatGRPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, task=task)
    assert trainer.generation_config.temperature == 2.0  # rollouts are sampled at T = 2
    inputs = _loss_inputs(trainer, ds, n_prompts=1)
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
    att = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
    with torch.no_grad():
        logps, _, _ = trainer._get_per_token_logps_and_entropies(model, ids, att, inputs["completion_ids"].size(1))
        at_1, at_2 = _completion_logps(model, inputs, 1.0), _completion_logps(model, inputs, 2.0)
    m = inputs["completion_mask"].bool()
    assert torch.allclose(logps[m], at_1[m], atol=1e-5)  # scored at T = 1
    assert not torch.allclose(logps[m], at_2[m], atol=1e-3)
    # the default, "sampling", is TRL's convention: score at the rollout temperature
    cfg2 = compose([*TINY, *TINY_RL, "objective=rl", "strategy=standard", "objective.temperature=2.0"])
    args2 = grpo_config(cfg2.objective, tmp_path, cfg2)
    assert args2.temperature == 2.0 and args2.generation_kwargs is None


def test_bad_logprob_temperature_and_clip_name_the_key():
    from conftest import compose

    from cat_experiments.config import ConfigError, validate

    with pytest.raises(ConfigError, match="objective.logprob_temperature"):
        validate(compose(["objective=rl", "objective.logprob_temperature=hot"]))
    with pytest.raises(ConfigError, match="objective.logprob_temperature"):
        validate(compose(["objective=rl", "objective.logprob_temperature=0"]))
    with pytest.raises(ConfigError, match="objective.advantage_clip"):
        validate(compose(["objective=rl", "objective.advantage_clip=-1"]))


class _TimesTen(Majority):
    """A strategy whose CAT weight is 10 for every rollout (so A * w leaves [-c, c] where A does not)."""

    def group_weights(self, group):
        return torch.full((len(group),), 10.0, dtype=torch.float64)


class _LengthTask(ArithmeticTask):
    """Rewards that vary within a group from an untrained model: the completion's length mod 4."""

    def score(self, row, completion):
        r = float(len(completion) % 4)
        return Score(reward=r, correct=r >= 3, vote_key=None)


def test_advantage_clip_clips_the_normalised_advantage_before_the_weight(tmp_path, tmp_path_factory):
    """The authors' protein order: clip(A, -c, c), then (. - penalty * all_wrong) * w, with A * w unclipped."""
    model, tok = load(tmp_path_factory)
    task = _LengthTask(op="+", digits=1, n_train=64, n_test=8)
    ds = rl_dataset(task.train_rows(), use_chat_template=False)
    runs = {}
    for name, strategy, clip, penalty in [("A", Standard(), None, 0.0), ("Aw", _TimesTen(4, k=2), None, 0.5),
                                          ("clipped", _TimesTen(4, k=2), 0.3, 0.5)]:
        trainer = CatGRPOTrainer(model=model, args=grpo_args(tmp_path / name), train_dataset=ds,
                                 processing_class=tok, task=task, strategy=strategy, all_wrong_penalty=penalty,
                                 advantage_clip=clip)
        torch.manual_seed(0)
        runs[name] = trainer._generate_and_score_completions([dict(ds[i]) for i in range(2) for _ in range(4)])["advantages"]
    a = runs["A"]
    all_wrong = ((a * 10 - runs["Aw"]) / 5).round()  # (A - 0.5 * aw) * 10 = 10 A - 5 aw
    assert torch.allclose(runs["Aw"], (a - 0.5 * all_wrong) * 10, atol=1e-5)
    assert torch.allclose(runs["clipped"], (a.clamp(-0.3, 0.3) - 0.5 * all_wrong) * 10, atol=1e-5)
    # the weighted advantage is NOT clipped: it leaves [-0.3, 0.3] (the old order capped it there)
    assert runs["clipped"].abs().max() > 0.3 and (a.abs() > 0.3).any()


def test_left_padded_rows_are_scored_at_the_positions_they_were_sampled_at(task, tmp_path, tmp_path_factory):
    """TRL left-pads prompts; a row's completion log-probs must not depend on the padding in front of it
    (the tiny GPT-2 has absolute position embeddings; issue 21, the authors right-pad)."""
    model, tok = load(tmp_path_factory)
    ds = rl_dataset(task.train_rows(), use_chat_template=False)
    trainer = CatGRPOTrainer(model=model, args=grpo_args(tmp_path), train_dataset=ds, processing_class=tok,
                             task=task, strategy=Standard())
    short, long = tok.convert_tokens_to_ids(list("1+2=3\n")), tok.convert_tokens_to_ids(list("11+22=33"))
    pad = tok.pad_token_id
    width = len(long)
    ids = torch.tensor([[pad] * (width - len(short)) + short, long])
    mask = torch.tensor([[0] * (width - len(short)) + [1] * len(short), [1] * width])
    model.eval()
    with torch.no_grad():
        batch, _, _ = trainer._get_per_token_logps_and_entropies(model, ids, mask, 2)
        alone, _, _ = trainer._get_per_token_logps_and_entropies(model, ids[:1, width - len(short):],
                                                                 mask[:1, width - len(short):], 2)
        # what sampling sees: generate's positions for the padded row
        logits = model(input_ids=ids[:1], attention_mask=mask[:1],
                       position_ids=(mask[:1].cumsum(-1) - 1).clamp(min=0)).logits
    ref = torch.log_softmax(logits[0, -3:-1], -1).gather(-1, ids[0, -2:, None]).squeeze(-1)
    assert torch.allclose(batch[0], alone[0], atol=1e-5) and torch.allclose(batch[0], ref, atol=1e-5)
    # without the fix the padded row sits 2 positions later and its log-probs move
    shifted = torch.log_softmax(model(input_ids=ids[:1], attention_mask=mask[:1]).logits[0, -3:-1], -1)
    assert not torch.allclose(shifted.gather(-1, ids[0, -2:, None]).squeeze(-1), ref, atol=1e-3)
    # the hook is gone afterwards
    assert not model._forward_pre_hooks


def test_rl_steps_log_the_share_of_invalid_rollouts_per_reason(tmp_path, tmp_path_factory):
    from cat_experiments.pipeline import _last_logged
    from cat_experiments.tasks.protein import ProteinUnconditionalTask

    model, tok = load(tmp_path_factory)  # an arithmetic model: its digits are never amino acids
    task = ProteinUnconditionalTask(prompt_prefix="1+", n_train=16)
    ds = rl_dataset(task.train_rows(), use_chat_template=False)
    trainer = CatGRPOTrainer(model=model, args=grpo_args(tmp_path), train_dataset=ds, processing_class=tok,
                             task=task, strategy=Standard())
    torch.manual_seed(0)
    trainer._generate_and_score_completions([dict(ds[i]) for i in range(8)])
    scores = trainer.task_reward.last_scores
    mode = "train" if trainer.model.training else "eval"
    logged = {r: trainer._metrics[mode][f"invalid/{r}"][-1] for r in task.invalid_reasons}
    assert logged == {r: sum(s.invalid == r for s in scores) / len(scores) for r in task.invalid_reasons}
    assert sum(logged.values()) == 1.0 and all(s.reward == -5.0 for s in scores)
    # the arithmetic task names no reasons, so nothing is logged for it
    arith = CatGRPOTrainer(model=model, args=grpo_args(tmp_path / "a"), train_dataset=rl_dataset(
        ArithmeticTask(op="+", digits=1, n_train=8, n_test=2).train_rows(), use_chat_template=False),
        processing_class=tok, task=ArithmeticTask(op="+", digits=1, n_train=8, n_test=2), strategy=Standard())
    arith._generate_and_score_completions([dict(arith.train_dataset[i]) for i in range(8)])
    assert not any(k.startswith("invalid/") for m in ("train", "eval") for k in arith._metrics[m])
    # the run's train_stats keep the first, last and mean share per reason
    trainer.state.log_history = [{"loss": 1.0, "invalid/empty": 0.5}, {"loss": 0.5, "invalid/empty": 0.25}]
    stats = _last_logged(trainer)
    assert (stats["invalid/empty/first"], stats["invalid/empty/last"], stats["invalid/empty/mean"]) == (0.5, 0.25, 0.375)
