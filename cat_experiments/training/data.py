"""Rows -> TRL datasets and evaluation prompts (plain text or through the chat template)."""

from __future__ import annotations

from typing import Any

from datasets import Dataset

from ..config import ConfigError


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def sft_dataset(rows: list[dict[str, Any]], use_chat_template: bool) -> Dataset:
    """Prompt-completion rows: TRL supervises the completion only and appends EOS."""
    if use_chat_template:
        data = [{"prompt": _user(r["prompt"]), "completion": [{"role": "assistant", "content": r["completion"]}]}
                for r in rows]
    else:
        data = [{"prompt": r["prompt"], "completion": r["completion"]} for r in rows]
    return Dataset.from_list(data)


def rl_dataset(rows: list[dict[str, Any]], use_chat_template: bool) -> Dataset:
    """Prompt rows for GRPO; every other column reaches the reward function (the SFT target as `target`)."""
    data = []
    for r in rows:
        item = {k: v for k, v in r.items() if k not in ("prompt", "completion")}
        item["target"] = r.get("completion", "")
        item["prompt"] = _user(r["prompt"]) if use_chat_template else r["prompt"]
        data.append(item)
    return Dataset.from_list(data)


def eval_prompts(tokenizer, rows: list[dict[str, Any]], use_chat_template: bool) -> list[str]:
    if not use_chat_template:
        return [r["prompt"] for r in rows]
    return [tokenizer.apply_chat_template(_user(r["prompt"]), tokenize=False, add_generation_prompt=True)
            for r in rows]


def stage_rows(rows: list, section: Any) -> list:
    """rows[data_start : data_start + num_examples]: e.g. warmup on the first 2,000, RL on the next 500."""
    start = int(section.data_start)
    end = None if section.num_examples is None else start + int(section.num_examples)
    chosen = rows[start:end]
    if not chosen:
        raise ConfigError(f"config error: data_start={start}, num_examples={section.num_examples} selects no "
                          f"rows out of {len(rows)} training rows")
    return chosen
