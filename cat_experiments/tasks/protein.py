"""Synthetic protein design tasks (method.md, Table 6): rewards on the hydrophobic fraction.

h(seq) = fraction of residues in {A, I, L, M, F, W, Y, V}.

- Unconditional: R(h) = 4 exp(-(h-0.35)^2/0.05) + 12 exp(-(h-0.75)^2/0.015) - 2 [0.45 < h < 0.60];
  a broad easy mode (~4 at h = 0.35) and a narrow rare mode (~12.16 at h = 0.75).
  Invalid alphabet or length < 10 -> -5.
- Conditional: given an input of hydrophobic fraction h_in, the output should have h_out = 1 - h_in:
  R = 10 exp(-(h_out - (1 - h_in))^2/0.05) - 2 [|h_out - h_in| < 0.1 and |h_in - 0.5| > 0.1]
  (the penalty punishes copying the input's composition); invalid or length < 5 -> -5.

Completions are cleaned before scoring as the authors do: every whitespace character (spaces,
newlines, tabs) is removed, because ProtGPT2 writes sequences with a newline every 60 residues and a
prompt ending in "Output:" is naturally followed by a space, and the sequence is upper-cased (so "acd"
is the valid "ACD"). Nothing else is forgiven: the 6 non-standard letters (B, J, O, U, X, Z), digits
and punctuation make a sequence invalid (R = -5). `invalid_reason` names why: "empty" (nothing, or
the model ended at once), "non_amino_acid" (a character outside the 20 letters) or "too_short".

Score.correct (informational only; the protein metric is "max@k") is our choice:
unconditional R >= 8 (h within ~0.078 of the rare mode 0.75), conditional R >= 8
(|h_out - (1 - h_in)| <= ~0.106). vote_key is None (no vote over designs).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

from .base import Score, Task

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
HYDROPHOBIC = frozenset("AILMFWYV")
POLAR = "".join(a for a in AMINO_ACIDS if a not in HYDROPHOBIC)
_VALID = frozenset(AMINO_ACIDS)
INVALID_REWARD = -5.0
UNCONDITIONAL_MIN_LEN = 10
CONDITIONAL_MIN_LEN = 5
CORRECT_THRESHOLD = 8.0
RARE_H = 0.65  # the rare high-hydrophobicity mode the tiny protein LM samples at ~1% (docs/proteins.md)
CONDITIONAL_PROMPT = "Input: {seq} \n Output:"


def clean_sequence(text: str) -> str:
    """Remove all whitespace (ProtGPT2 breaks lines every 60 residues) and upper-case (the authors')."""
    return "".join(text.split()).upper()


INVALID_REASONS = ("empty", "non_amino_acid", "too_short")


def invalid_reason(text: str, min_len: int) -> str | None:
    """Why a completion is invalid (R = -5), or None when it is a valid sequence of >= min_len residues.
    Checked in this order: empty, then a non-amino-acid character, then too short."""
    seq = clean_sequence(text)
    if not seq:
        return "empty"
    if not is_valid_sequence(seq):
        return "non_amino_acid"
    if len(seq) < min_len:
        return "too_short"
    return None


def invalid_shares(texts: Sequence[str], min_len: int) -> dict[str, float]:
    """The share of completions invalid for each reason (keys "invalid_<reason>", plus "invalid_share")."""
    reasons = [invalid_reason(t, min_len) for t in texts]
    n = max(1, len(reasons))
    out = {f"invalid_{r}": sum(x == r for x in reasons) / n for r in INVALID_REASONS}
    out["invalid_share"] = sum(x is not None for x in reasons) / n
    return out


def is_valid_sequence(seq: str) -> bool:
    return bool(seq) and all(c in _VALID for c in seq)


def hydrophobic_fraction(seq: str) -> float:
    """Fraction of residues in AILMFWYV (whitespace removed first); 0.0 for an empty sequence."""
    seq = clean_sequence(seq)
    if not seq:
        return 0.0
    return sum(c in HYDROPHOBIC for c in seq) / len(seq)


def unconditional_reward_of_h(h: float) -> float:
    """R(h) of the unconditional task for a valid sequence (the landscape, for plots)."""
    band = 2.0 if 0.45 < h < 0.60 else 0.0
    return 4.0 * math.exp(-((h - 0.35) ** 2) / 0.05) + 12.0 * math.exp(-((h - 0.75) ** 2) / 0.015) - band


def conditional_reward_of_h(h_in: float, h_out: float) -> float:
    """R(h_in, h_out) of the conditional task for a valid output (the landscape, for plots).

    The copy-penalty conditions compare raw floats, as the authors do: h values are ratios of small
    integers, so a difference that is 0.1 in rationals (0.35 - 0.25) is 0.0999...98 in floats and IS
    penalised (until issue 21 we compared exactly and did not penalise it)."""
    copy_penalty = 2.0 if abs(h_out - h_in) < 0.1 and abs(h_in - 0.5) > 0.1 else 0.0
    return 10.0 * math.exp(-((h_out - (1.0 - h_in)) ** 2) / 0.05) - copy_penalty


def unconditional_reward(seq: str) -> float:
    if invalid_reason(seq, UNCONDITIONAL_MIN_LEN) is not None:
        return INVALID_REWARD
    return unconditional_reward_of_h(hydrophobic_fraction(seq))


def conditional_reward(input_seq: str, output_seq: str) -> float:
    if invalid_reason(output_seq, CONDITIONAL_MIN_LEN) is not None:
        return INVALID_REWARD
    return conditional_reward_of_h(hydrophobic_fraction(input_seq), hydrophobic_fraction(output_seq))


# ---- sequence generators (shared with the tiny protein LM's pretraining corpus) ---------------------------

# Background amino-acid frequencies (UniProtKB/Swiss-Prot release statistics, percent); h mean ~ 0.41.
NATURAL_FREQ = {"A": 8.25, "R": 5.53, "N": 4.06, "D": 5.45, "C": 1.37, "Q": 3.93, "E": 6.75, "G": 7.07,
                "H": 2.27, "I": 5.96, "L": 9.66, "K": 5.84, "M": 2.42, "F": 3.86, "P": 4.70, "S": 6.56,
                "T": 5.34, "W": 1.08, "Y": 2.92, "V": 6.87}


def pick_letters(rng: random.Random, letters: str, k: int) -> list[str]:
    return rng.choices(letters, weights=[NATURAL_FREQ[a] for a in letters], k=k)


def random_sequence(rng: random.Random, length: int) -> str:
    """i.i.d. residues at natural frequencies."""
    return "".join(pick_letters(rng, AMINO_ACIDS, length))


def conditional_pair(rng: random.Random) -> tuple[str, str]:
    """(input, target) as the authors draw them: input 10-19 residues, each uniform over the 20 amino acids;
    target of random length 10-19 with round((1 - h_in) L) hydrophobic residues, each uniform within
    its class (AILMFWYV or the other 12), positions shuffled."""
    seq = "".join(rng.choices(AMINO_ACIDS, k=rng.randint(10, 19)))
    length = rng.randint(10, 19)
    n = round((1.0 - hydrophobic_fraction(seq)) * length)
    chars = rng.choices(sorted(HYDROPHOBIC), k=n) + rng.choices(POLAR, k=length - n)
    rng.shuffle(chars)
    return seq, "".join(chars)


def sample_stats(seqs: Sequence[str], marker: str = "W") -> dict[str, float]:
    """h statistics of a pool of sequences (valid: >= 10 residues, amino acids only)."""
    cleaned = [clean_sequence(s) for s in seqs]
    valid = [s for s in cleaned if invalid_reason(s, UNCONDITIONAL_MIN_LEN) is None]
    hs = [hydrophobic_fraction(s) for s in valid]
    marked = [hydrophobic_fraction(s) for s in valid if s.startswith(marker)]
    rewards = [unconditional_reward(s) for s in cleaned]
    n = max(1, len(cleaned))
    return {**invalid_shares(cleaned, UNCONDITIONAL_MIN_LEN),
        "n": len(cleaned),
        "valid_share": len(valid) / n,
        "share_h_ge_0.65": sum(h >= RARE_H for h in hs) / n,
        "mean_h": sum(hs) / max(1, len(hs)),
        "marker_first_share": len(marked) / n,
        "marker_first_mean_h": sum(marked) / len(marked) if marked else float("nan"),
        "mean_reward": sum(rewards) / n,
        "mean_length": sum(len(s) for s in cleaned) / n,
    }


# ---- tasks -------------------------------------------------------------------------------------------------

class ProteinUnconditionalTask(Task):
    """One prompt (the model's BOS as text: "[BOS]" for tiny_protein, "<|endoftext|>" for ProtGPT2).

    train_rows: n_train copies of the prompt (RL draws prompts from them; with max_steps set their
    number only decides the epoch length). Their "completion" is a random natural-frequency sequence
    so an (optional, normally disabled) CE warmup is just more pretraining-like data.
    test_rows: the single prompt; the eval pool (512 in the paper) is drawn from it.
    """

    name = "protein_unconditional"
    metrics = ("max@k",)
    invalid_reasons = INVALID_REASONS  # logged per RL step as invalid/<reason>

    def __init__(self, prompt_prefix: str = "", n_train: int = 1200, data_seed: int = 1234):
        rng = random.Random(data_seed)
        self.prompt = prompt_prefix
        self._train = [{"prompt": prompt_prefix, "completion": random_sequence(rng, rng.randint(30, 60))}
                       for _ in range(n_train)]
        self._test = [{"prompt": prompt_prefix, "completion": ""}]

    def train_rows(self):
        return list(self._train)

    def test_rows(self):
        return list(self._test)

    def score(self, row: dict[str, Any], completion: str) -> Score:
        r = unconditional_reward(completion)
        return Score(reward=r, correct=r >= CORRECT_THRESHOLD, vote_key=None,
                     invalid=invalid_reason(completion, UNCONDITIONAL_MIN_LEN))

    def sample_stats(self, rows, pools):
        """The pools' h statistics (valid share, share with h >= 0.65, mean h and length, ...)."""
        return sample_stats([c for pool in pools for c in pool])


class ProteinConditionalTask(Task):
    """Prompt "Input: {seq} \\n Output:" (after the model's prompt prefix), seq random 10-19 residues.

    train_rows: n_train synthetic pairs (the first 2,000 feed the CE warmup; RL takes its prompts from
    rows[objective.data_start:]); test_rows: n_test (150) held-out prompts from a separate seed, whose
    inputs never occur among the training inputs. Rows carry "input" (the input sequence) for scoring.
    """

    name = "protein_conditional"
    metrics = ("max@k",)
    invalid_reasons = INVALID_REASONS  # logged per RL step as invalid/<reason>

    def __init__(self, prompt_prefix: str = "", n_train: int = 4000, n_test: int = 150, data_seed: int = 1234):
        self.prefix = prompt_prefix
        rng = random.Random(data_seed)
        self._train = [self._row(*conditional_pair(rng)) for _ in range(n_train)]
        seen = {r["input"] for r in self._train}
        test_rng = random.Random(f"{data_seed}-test")
        self._test = []
        while len(self._test) < n_test:
            seq, target = conditional_pair(test_rng)
            if seq not in seen:
                seen.add(seq)
                self._test.append(self._row(seq, target))

    def _row(self, seq: str, target: str) -> dict[str, Any]:
        # The warmup's target follows "Output:" after a space, as the authors' (prompt + " " + target)
        return {"prompt": self.prefix + CONDITIONAL_PROMPT.format(seq=seq), "completion": " " + target, "input": seq}

    def train_rows(self):
        return list(self._train)

    def test_rows(self):
        return list(self._test)

    def score(self, row: dict[str, Any], completion: str) -> Score:
        r = conditional_reward(row["input"], completion)
        return Score(reward=r, correct=r >= CORRECT_THRESHOLD, vote_key=None,
                     invalid=invalid_reason(completion, CONDITIONAL_MIN_LEN))

    def sample_stats(self, rows, pools):
        """The error of the outputs' h from the target 1 - h(input), over valid outputs (>= 5 residues)."""
        outputs = [c for pool in pools for c in pool]
        errs = [hydrophobic_fraction(c) - (1 - hydrophobic_fraction(row["input"]))
                for row, pool in zip(rows, pools, strict=True) for c in pool
                if invalid_reason(c, CONDITIONAL_MIN_LEN) is None]
        mean = sum(errs) / max(1, len(errs))
        return {"n": len(outputs), **invalid_shares(outputs, CONDITIONAL_MIN_LEN),
                "valid_share": len(errs) / max(1, len(outputs)), "err_mean": mean,
                "err_std": (sum((x - mean) ** 2 for x in errs) / max(1, len(errs) - 1)) ** 0.5,
                "abs_err_mean": sum(abs(x) for x in errs) / max(1, len(errs))}
