"""Sampling throughput of the evaluation engines, side by side: HF generate (keyed sampler) and vLLM.

    python benchmarks/sampling.py                       # the embedded default's tiny model, on CPU
    python benchmarks/sampling.py --model PATH --problems 200 --pool 128 --max-new-tokens 512

Both engines sample the same pools (same prompts, pool size, temperature, token limit); the table gives
each engine's start-up, sampling time, generated tokens and tokens/s, and the ratio to HF. Generated
tokens are counted by re-tokenizing the completions (+1 per sample that stopped at EOS). The printed
tokens/s is what `hardware.throughput.hf` / `.vllm` take for the plan's GPU-hour estimate.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _tiny_model(cache: Path) -> str:
    from hydra import compose, initialize_config_dir

    from cat_experiments.config import register_configs
    from cat_experiments.models import resolve_model_path

    register_configs()
    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["logger=none"])
    return resolve_model_path(cfg.model, cache)


def _tokens(tok, pools, max_new_tokens: int) -> int:
    n = 0
    for pool in pools:
        for text in pool:
            k = len(tok(text, add_special_tokens=False)["input_ids"])
            n += min(k + (k < max_new_tokens), max_new_tokens)
    return n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="checkpoint path (default: the tiny model of `make run`)")
    ap.add_argument("--problems", type=int, default=200)
    ap.add_argument("--pool", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=14)
    ap.add_argument("--batch-size", type=int, default=2048, help="HF: most sequences per generate call")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--engines", default="hf,vllm")
    args = ap.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cat_experiments.evaluation.engines import open_engine

    if args.threads:
        torch.set_num_threads(args.threads)
    path = args.model or _tiny_model(Path("outputs/cache"))
    tok = AutoTokenizer.from_pretrained(path)
    prompts = [f"{10 + i % 90}*{10 + (7 * i) % 90}=" for i in range(args.problems)]
    device = "cuda" if torch.cuda.is_available() else "cpu"

    def hf_loader(p):
        model = AutoModelForCausalLM.from_pretrained(p, dtype=getattr(torch, args.dtype)).to(device)
        return model, AutoTokenizer.from_pretrained(p)

    rows = []
    for name in args.engines.split(","):
        t0 = time.perf_counter()
        engine = open_engine(name, path, hf_loader, dtype=args.dtype)
        start = time.perf_counter() - t0
        t0 = time.perf_counter()
        pools = engine.sample(prompts, args.pool, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                              seed=0, progress=False)
        secs = time.perf_counter() - t0
        engine.close()
        n = _tokens(tok, pools, args.max_new_tokens)
        rows.append((name, start, secs, n, n / secs))
    print(f"\nmodel {path} on {device}: {args.problems} problems x {args.pool} samples, "
          f"<= {args.max_new_tokens} new tokens, torch threads {torch.get_num_threads()}\n")
    print("| engine | start-up s | sampling s | tokens | tokens/s | ratio to hf |")
    print("|---|---|---|---|---|---|")
    base = next((r[4] for r in rows if r[0] == "hf"), rows[0][4])
    for name, start, secs, n, rate in rows:
        print(f"| {name} | {start:.1f} | {secs:.2f} | {n} | {rate:,.0f} | {rate / base:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
