"""sample_pools on a tiny random GPT-2, and scaling_curves against hand-computed values."""

from __future__ import annotations

import itertools
import os
from math import comb

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from cat_experiments.evaluation.sampling import (  # noqa: E402
    keyed_uniform,
    num_generate_calls,
    plan_batches,
    sample_pools,
)
from cat_experiments.evaluation.sweep import (  # noqa: E402
    check_budgets,
    problem_summary,
    scaling_curves,
    score_pools,
)
from cat_experiments.tasks.base import Score, Task  # noqa: E402

CHARS = list("abcdefghijklmnopqrstuvwxyz0123456789 +=?")


@pytest.fixture(scope="module")
def tiny_lm():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(["[PAD]", "[EOS]", "[BOS]", "[UNK]", *CHARS])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", eos_token="[EOS]", bos_token="[BOS]", unk_token="[UNK]"
    )
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(vocab),
        n_positions=64,
        n_embd=32,
        n_layer=1,
        n_head=2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = GPT2LMHeadModel(config)
    return model, tokenizer


PROMPTS = ["1+1=", "12+30=", "a", "what is 7+8?"]


def test_tokenizer_roundtrip(tiny_lm):
    _, tokenizer = tiny_lm
    ids = tokenizer("12+30=", add_special_tokens=False)["input_ids"]
    assert len(ids) == 6
    assert tokenizer.decode(ids) == "12+30="


def test_sample_pools_shape_determinism_and_restore(tiny_lm):
    model, tokenizer = tiny_lm
    model.train()
    tokenizer.padding_side = "right"
    kw = dict(max_new_tokens=6, batch_size=8, progress=False)
    rng_before = torch.get_rng_state()
    pools = sample_pools(model, tokenizer, PROMPTS, 5, seed=1, **kw)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global RNG is left alone
    assert len(pools) == len(PROMPTS)
    assert all(len(pool) == 5 and all(isinstance(c, str) for c in pool) for pool in pools)
    assert all(len(c) <= 6 for pool in pools for c in pool)  # new tokens only (1 char each here)
    assert tokenizer.padding_side == "right"
    assert model.training
    assert sample_pools(model, tokenizer, PROMPTS, 5, seed=1, **kw) == pools
    assert sample_pools(model, tokenizer, PROMPTS, 5, seed=2, **kw) != pools
    model.eval()
    sample_pools(model, tokenizer, PROMPTS[:1], 2, seed=1, **kw)
    assert not model.training


def test_sample_pools_chunks_large_m(tiny_lm):
    model, tokenizer = tiny_lm
    pools = sample_pools(
        model, tokenizer, PROMPTS[:2], 7, max_new_tokens=3, batch_size=3, seed=0, progress=False
    )
    assert [len(p) for p in pools] == [7, 7]
    assert plan_batches([4, 6], 7, 3) == [([0], 3), ([0], 3), ([0], 1), ([1], 3), ([1], 3), ([1], 1)]
    assert plan_batches([5, 2, 9], 2, 4) == [([1, 0], 2), ([2], 2)]
    assert num_generate_calls(2, 7, 3) == 6 and num_generate_calls(3, 2, 4) == 2
    assert sample_pools(model, tokenizer, [], 3, max_new_tokens=2) == []


def test_left_padding_matches_unpadded(tiny_lm):
    """With top_k=1 sampling is greedy: a prompt's completion must not depend on its batch-mates'
    lengths (left padding + attention mask + positions are right)."""
    model, tokenizer = tiny_lm
    kw = dict(max_new_tokens=5, top_k=1, progress=False, seed=0)
    together = sample_pools(model, tokenizer, PROMPTS, 2, batch_size=8, **kw)
    alone = [sample_pools(model, tokenizer, [p], 2, batch_size=8, **kw)[0] for p in PROMPTS]
    assert together == alone
    assert all(pool[0] == pool[1] for pool in together)


def test_pools_are_keyed_by_problem_not_by_batching_order_or_shard(tiny_lm):
    """A problem's pool depends on (seed, problem id) only: not on batch_size, on which prompts share a
    generate call, on their order, or on which subset (a process's shard) is sampled."""
    model, tokenizer = tiny_lm
    kw = dict(max_new_tokens=6, seed=3, progress=False)
    ref = sample_pools(model, tokenizer, PROMPTS, 5, batch_size=64, **kw)  # all prompts in one call
    assert sample_pools(model, tokenizer, PROMPTS, 5, batch_size=3, **kw) == ref  # chunks of 3, 2
    rev = sample_pools(model, tokenizer, PROMPTS[::-1], 5, batch_size=10, problem_ids=[3, 2, 1, 0], **kw)
    assert rev[::-1] == ref
    shard = sample_pools(model, tokenizer, [PROMPTS[1], PROMPTS[3]], 5, batch_size=7, problem_ids=[1, 3], **kw)
    assert shard == [ref[1], ref[3]]
    assert sample_pools(model, tokenizer, PROMPTS, 5, batch_size=64, problem_ids=[4, 5, 6, 7], **kw) != ref
    with pytest.raises(ValueError, match="problem_ids"):
        sample_pools(model, tokenizer, PROMPTS, 1, max_new_tokens=1, problem_ids=[0, 1])


def test_keyed_uniform_is_uniform_and_keyed():
    pids, sids = torch.arange(64).repeat_interleave(16), torch.arange(16).repeat(64)
    u = keyed_uniform(7, pids, sids, step=0, vocab=64)
    assert u.shape == (1024, 64) and u.dtype == torch.float64 and 0 < u.min() and u.max() < 1
    flat = u.flatten().numpy()
    assert abs(flat.mean() - 0.5) < 4 * (1 / 12 / flat.size) ** 0.5
    counts = np.histogram(flat, bins=16, range=(0, 1))[0]  # chi-square, 15 d.o.f.: 99.99% quantile ~ 44
    expected = flat.size / 16
    assert ((counts - expected) ** 2 / expected).sum() < 44
    assert torch.equal(u, keyed_uniform(7, pids, sids, step=0, vocab=64))
    for other in (keyed_uniform(8, pids, sids, 0, 64), keyed_uniform(7, pids, sids, 1, 64),
                  keyed_uniform(7, pids + 1, sids, 0, 64), keyed_uniform(7, pids, sids + 1, 0, 64)):
        assert (other != u).float().mean() > 0.999
    big = keyed_uniform(2**40 + 5, pids[:4], sids[:4], 0, 8)
    assert not torch.equal(big, keyed_uniform(5, pids[:4], sids[:4], 0, 8))  # the seed's high bits count


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (1.7, 0, 1.0), (1.0, 3, 1.0), (0.8, 0, 0.5)])
def test_keyed_sampler_draws_from_the_warped_softmax(tiny_lm, temperature, top_k, top_p):
    """First-token frequencies over 6,000 draws against the exact warped distribution (HF's warpers):
    every token within 4.5 standard errors, nothing outside the top-k / nucleus support."""
    from transformers.generation.logits_process import (
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    model, tokenizer = tiny_lm
    prompt = "12+30="
    ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        logits = model(ids).logits[:, -1, :].float()
    for warp in ([TemperatureLogitsWarper(temperature)] + ([TopKLogitsWarper(top_k)] if top_k else [])
                 + ([TopPLogitsWarper(top_p)] if top_p < 1 else [])):
        logits = warp(ids, logits)
    probs = torch.softmax(logits, -1)[0].double().numpy()
    n = 6000
    pool = sample_pools(model, tokenizer, [prompt], n, max_new_tokens=1, temperature=temperature, top_k=top_k,
                        top_p=top_p, batch_size=2000, seed=11, progress=False, eos_token_id=10**6)[0]
    vocab = tokenizer.get_vocab()
    freq = np.zeros_like(probs)
    for c in pool:
        freq[vocab[c] if c else 0] += 1
    freq /= n
    # the 4 specials (ids 0-3) all decode to "": one category
    probs = np.concatenate([[probs[:4].sum()], probs[4:]])
    freq = np.concatenate([[freq[:4].sum()], freq[4:]])
    assert freq[probs == 0].sum() == 0
    se = np.sqrt(probs * (1 - probs) / n) + 1e-12
    assert np.max(np.abs(freq - probs) / se) < 4.5, (freq, probs)


def test_sample_pools_validates(tiny_lm):
    model, tokenizer = tiny_lm
    with pytest.raises(ValueError, match="temperature"):
        sample_pools(model, tokenizer, PROMPTS, 2, max_new_tokens=2, temperature=0.0)
    with pytest.raises(ValueError, match="m must be"):
        sample_pools(model, tokenizer, PROMPTS, 0, max_new_tokens=2)
    with pytest.raises(ValueError, match="zero tokens"):
        sample_pools(model, tokenizer, ["", "a"], 1, max_new_tokens=2, progress=False)


# ----------------------------------------------------------------------------- scaling curves


class FakeTask(Task):
    """Completions are "<answer>" or "<answer>:<reward>"; "?" is unparseable. Correct = answer == row["answer"]."""

    name = "fake"
    metrics = ("pass@k", "maj@k", "max@k")

    def __init__(self, gold: bool = True):
        self.gold = gold

    def score(self, row, completion):
        answer, _, reward = completion.partition(":")
        key = None if answer == "?" else answer
        return Score(
            reward=float(reward or 0.0), correct=key is not None and key in row["answers"], vote_key=key
        )

    def gold_key(self, row):
        return row["answers"][0] if self.gold else None


ROWS = [{"prompt": "p0", "answers": ["a"]}, {"prompt": "p1", "answers": ["x"]}]
POOLS = [["a:0", "b:1", "b:0.5", "a:1"], ["x:0.2", "?:0.9", "x:0.1", "y:0.3"]]


def _brute_maj(votes, correct_keys, k):
    total = 0.0
    subsets = list(itertools.combinations(range(len(votes)), k))
    for sub in subsets:
        counts: dict = {}
        for i in sub:
            if votes[i] is not None:
                counts[votes[i]] = counts.get(votes[i], 0) + 1
        if counts:
            top = max(counts.values())
            tied = [v for v, c in counts.items() if c == top]
            total += sum(v in correct_keys for v in tied) / len(tied)
    return total / len(subsets)


def _brute_max(rewards, k):
    return float(np.mean([max(draw) for draw in itertools.product(rewards, repeat=k)]))


@pytest.mark.parametrize("gold", [True, False])
def test_scaling_curves_hand_computed(gold):
    task = FakeTask(gold=gold)
    scores = score_pools(task, ROWS, POOLS)
    assert scores[1][1] == Score(reward=0.9, correct=False, vote_key=None)
    curves = scaling_curves(task, ROWS, scores, [4, 1, 2])
    assert list(curves) == ["pass@k", "maj@k", "max@k"]
    assert list(curves["pass@k"]) == [1, 2, 4]
    # pass@k: both problems have c=2 of m=4: pass@1 = 1/2, pass@2 = 1 - C(2,2)/C(4,2) = 5/6, pass@4 = 1
    assert curves["pass@k"] == pytest.approx({1: 0.5, 2: 5 / 6, 4: 1.0})
    assert 1 - comb(2, 2) / comb(4, 2) == pytest.approx(5 / 6)
    # maj@k: problem 0 votes a,b,b,a (gold a): 1/2, 1/2, 1/2 (2-2 tie);
    # problem 1 votes x,?,x,y (gold x): 1/2, (2 + 1 + 2*0.5)/6 = 2/3, 1
    assert curves["maj@k"] == pytest.approx({1: 0.5, 2: (0.5 + 2 / 3) / 2, 4: 0.75})
    # max@k with replacement: problem 0 sorted [0, .5, 1, 1] -> k=2: .5*3/16 + 1*5/16 + 1*7/16 = 13.5/16
    p0 = {1: 0.625, 2: 13.5 / 16, 4: 1 - (1 / 2) ** 4 + 0.5 * ((1 / 2) ** 4 - (1 / 4) ** 4)}
    p1 = {k: _brute_max([0.2, 0.9, 0.1, 0.3], k) for k in (1, 2, 4)}
    assert curves["max@k"] == pytest.approx({k: (p0[k] + p1[k]) / 2 for k in (1, 2, 4)})
    for k in (1, 2, 4):
        assert p0[k] == pytest.approx(_brute_max([0, 1, 0.5, 1], k))
    assert curves["maj@k"][2] == pytest.approx(
        (_brute_maj(["a", "b", "b", "a"], {"a"}, 2) + _brute_maj(["x", None, "x", "y"], {"x"}, 2)) / 2
    )


def test_maj_sums_over_equivalent_correct_keys_and_no_correct_scores_zero():
    task = FakeTask(gold=False)
    rows = [{"answers": ["1/2", "0.5"]}, {"answers": ["z"]}]
    pools = [["1/2", "0.5", "0.5", "3", "3", "3"], ["a", "b", "a", "?", "c", "c"]]
    scores = score_pools(task, rows, pools)
    curves = scaling_curves(task, rows, scores, [1, 3, 6])
    for k in (1, 3, 6):
        expected = (_brute_maj(pools[0], {"1/2", "0.5"}, k) + 0.0) / 2
        assert curves["maj@k"][k] == pytest.approx(expected)
    assert curves["maj@k"][6] == 0.0  # "3" wins the full pool
    assert curves["pass@k"][1] == pytest.approx(0.25)


def test_budget_larger_than_pool_raises():
    task = FakeTask()
    scores = score_pools(task, ROWS, POOLS)
    with pytest.raises(ValueError, match=r"budget 8 .*pool size 4"):
        scaling_curves(task, ROWS, scores, [1, 8])
    with pytest.raises(ValueError, match="budget 0"):
        check_budgets([0], 4)
    with pytest.raises(ValueError, match="rows"):
        score_pools(task, ROWS, POOLS[:1])


def test_problem_summary():
    task = FakeTask()
    summary = problem_summary(score_pools(task, ROWS, POOLS))
    assert summary[1]["num_correct"] == 2 and summary[1]["num_invalid"] == 1
    assert summary[1]["top_vote"] == "x" and summary[1]["max_reward"] == pytest.approx(0.9)
