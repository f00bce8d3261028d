"""The tiny protein LM (model=tiny_protein) and the hydrophobic-fraction plots.

Why pretraining (docs/notes/protein-effect.md): a char model that only knows i.i.d. natural
residues almost never samples h >= 0.65 over 30-60 residues, so best-of-N training has nothing rare
to amplify and both methods collapse onto the broad h ~ 0.35 mode. ProtGPT2 knows hydrophobic
(membrane-like) families and samples them at a small but real rate. This module builds a tiny GPT-2
over amino-acid characters that has the same property:

- corpus = soluble sequences (length 30-60, i.i.d. natural frequencies, h ~ 0.41 +- 0.07, never
  starting with the marker W) + a "membrane-like" family (starts with W, every later residue
  hydrophobic with probability family_h = 0.8, length 20-40);
- phase 1: `steps_start` steps at family share 5% (the family is learned), phase 2: `steps` steps at
  the target share (1%: it stays rare). Plain PyTorch (AdamW, constant LR), one thread.
- check: `check_samples` samples at T = 1.0 and at T = 1.2 (the RL temperature) -> the share at
  h >= 0.65, the W-first share and its mean h (the family must be learned, not just its marker).
  Written to pretrain_stats.json beside the model.

The result is saved with save_pretrained (model + char tokenizer) and cached by models/tiny.py under a
key that includes every pretraining setting. Any run with model=tiny_protein builds (or reuses) it, e.g.
`python -m cat_experiments.main experiment=protein_unconditional_tiny stage=warmup`. The h-distribution
plots of a finished run: `python -m cat_experiments.report plot-h RUN_DIR` (records/proteins.py).
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import torch

from ..tasks.protein import (
    AMINO_ACIDS,
    HYDROPHOBIC,
    POLAR,
    random_sequence,
    sample_stats,
)

log = logging.getLogger(__name__)
STATS_FILE = "pretrain_stats.json"


# ---- settings -----------------------------------------------------------------------------------------------

DEFAULT_PRETRAIN = {
    "family_share": 0.01, "family_share_start": 0.05, "steps_start": 600, "steps": 400, "batch_size": 64,
    "learning_rate": 3.0e-3, "family_h": 0.8, "family_marker": "W", "family_len": [20, 40],
    "soluble_len": [30, 60], "seed": 0, "num_threads": 1, "check_samples": 2000,
}


def pretrain_settings(cfg: Any) -> dict[str, Any]:
    """The pretraining settings of a model config as a plain dict (defaults filled in)."""
    from omegaconf import DictConfig, OmegaConf

    raw = getattr(cfg, "pretrain", None)
    if raw is None:
        raw = {}
    elif isinstance(raw, DictConfig):
        raw = OmegaConf.to_container(raw, resolve=True)
    elif is_dataclass(raw):
        raw = asdict(raw)
    elif not isinstance(raw, Mapping):
        raw = vars(raw)
    out = dict(DEFAULT_PRETRAIN)
    out.update({k: (list(v) if isinstance(v, list | tuple) else v) for k, v in dict(raw).items()})
    return out


# ---- corpus -------------------------------------------------------------------------------------------------

def soluble_sequence(rng: random.Random, lo: int, hi: int, marker: str = "W") -> str:
    seq = random_sequence(rng, rng.randint(lo, hi))
    while seq[0] == marker:
        seq = random_sequence(rng, 1) + seq[1:]
    return seq


def family_sequence(rng: random.Random, lo: int, hi: int, family_h: float = 0.8, marker: str = "W") -> str:
    """The membrane-like family: the marker, then residues hydrophobic with probability family_h."""
    from ..tasks.protein import pick_letters

    length = rng.randint(lo, hi)
    body = [(pick_letters(rng, "".join(sorted(HYDROPHOBIC)), 1) if rng.random() < family_h else pick_letters(rng, POLAR, 1))[0]
            for _ in range(length - 1)]
    return marker + "".join(body)


def corpus_batch(rng: random.Random, n: int, share: float, s: Mapping[str, Any]) -> list[str]:
    out = []
    for _ in range(n):
        if rng.random() < share:
            out.append(family_sequence(rng, *s["family_len"], family_h=s["family_h"], marker=s["family_marker"]))
        else:
            out.append(soluble_sequence(rng, *s["soluble_len"], marker=s["family_marker"]))
    return out


# ---- model --------------------------------------------------------------------------------------------------

def _encode(tok, seqs: Sequence[str], device) -> tuple[torch.Tensor, torch.Tensor]:
    """[BOS] seq [EOS], right-padded; labels = -100 on padding."""
    ids = [[tok.bos_token_id] + tok.convert_tokens_to_ids(list(s)) + [tok.eos_token_id] for s in seqs]
    width = max(len(x) for x in ids)
    inp = torch.full((len(ids), width), tok.pad_token_id, dtype=torch.long)
    att = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        inp[i, : len(x)] = torch.tensor(x)
        att[i, : len(x)] = 1
    labels = inp.masked_fill(att == 0, -100)
    return inp.to(device), att.to(device), labels.to(device)


@torch.no_grad()
def sample_sequences(model, tok, n: int, temperature: float = 1.0, max_new_tokens: int = 64,
                     prompt: str = "[BOS]", seed: int = 0, batch_size: int = 512, top_k: int = 0) -> list[str]:
    """n unconditional samples (decoded, specials skipped), RNG state restored afterwards."""
    from ..evaluation.sampling import sample_pools

    return sample_pools(model, tok, [prompt], n, max_new_tokens=max_new_tokens, temperature=temperature,
                        top_k=top_k, batch_size=batch_size, seed=seed, progress=False)[0]


def pretrain_protein_lm(cfg: Any, out_dir: Path) -> dict[str, Any]:
    """Build the char GPT-2 of `cfg` (n_layer, n_embd, n_head, n_positions, chars, init_seed), pretrain it
    on the mixture, save it (model + tokenizer + pretrain_stats.json) into out_dir; returns the stats."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from .char_tokenizer import build_char_tokenizer

    s = pretrain_settings(cfg)
    missing = [a for a in AMINO_ACIDS if a not in cfg.chars]
    if missing:
        raise ValueError(f"model.chars lacks amino acid(s) {missing}: the protein LM needs all 20")
    threads = torch.get_num_threads()
    if s["num_threads"]:
        torch.set_num_threads(int(s["num_threads"]))
    t0 = time.time()
    try:
        tok = build_char_tokenizer(cfg.chars)
        config = GPT2Config(vocab_size=len(tok), n_layer=cfg.n_layer, n_embd=cfg.n_embd, n_head=cfg.n_head,
                            n_positions=cfg.n_positions, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                            pad_token_id=tok.pad_token_id)
        torch.manual_seed(int(cfg.init_seed))
        model = GPT2LMHeadModel(config)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=float(s["learning_rate"]), weight_decay=0.0)
        rng = random.Random(int(s["seed"]))
        phases = [(int(s["steps_start"]), float(s["family_share_start"])), (int(s["steps"]), float(s["family_share"]))]
        losses: list[float] = []
        step = 0
        for n_steps, share in phases:
            for _ in range(n_steps):
                inp, att, labels = _encode(tok, corpus_batch(rng, int(s["batch_size"]), share, s), "cpu")
                loss = model(input_ids=inp, attention_mask=att, labels=labels).loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                losses.append(loss.item())
                step += 1
                if step % 500 == 0:
                    log.info("[tiny_protein] step %d loss %.4f (%.0f s)", step, sum(losses[-100:]) / 100, time.time() - t0)
        train_s = time.time() - t0
        model.eval()
        stats: dict[str, Any] = {"settings": s, "pretrain_seconds": round(train_s, 1),
                                 "final_loss": sum(losses[-100:]) / max(1, len(losses[-100:]))}
        for temp in (1.0, 1.2):
            seqs = sample_sequences(model, tok, int(s["check_samples"]), temperature=temp, seed=int(s["seed"]))
            stats[f"T={temp}"] = sample_stats(seqs, s["family_marker"])
        stats["seconds_total"] = round(time.time() - t0, 1)
        out_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out_dir)
        tok.save_pretrained(out_dir)
        (out_dir / STATS_FILE).write_text(json.dumps(stats, indent=2))
        return stats
    finally:
        torch.set_num_threads(threads)


def build_tiny_protein_model(cfg: Any, out_dir: Path) -> Path:
    """Pretrain into out_dir (models/tiny.py builds into a temp dir, under a lock, and renames it)."""
    out_dir = Path(out_dir)
    stats = pretrain_protein_lm(cfg, out_dir)
    log.info("[tiny_protein] pretrained in %.0f s: share h >= 0.65 at T=1.0 %.4f, T=1.2 %.4f",
             stats["pretrain_seconds"], stats["T=1.0"]["share_h_ge_0.65"], stats["T=1.2"]["share_h_ge_0.65"])
    return out_dir
