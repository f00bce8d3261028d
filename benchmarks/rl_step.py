"""CAT GRPO step time against stock TRL GRPO on the same tiny config, measured side by side.

    python benchmarks/rl_step.py [--steps 30] [--rounds 2]

Each trainer runs `steps` optimizer steps (8 prompts x 8 rollouts, 12 new tokens, tiny GPT-2) from
the same initial weights; the first 3 steps are discarded as warm-up. Rounds alternate the order of
the variants so drift on a shared machine hits them alike. Prints median ms/step and the ratio to
stock TRL (target: CAT at most 1.10x).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from cat_experiments.models import load_model_and_tokenizer  # noqa: E402
from cat_experiments.strategies import BestOfN, Majority, PassAtN, Standard  # noqa: E402
from cat_experiments.tasks.arithmetic import ArithmeticTask  # noqa: E402
from cat_experiments.training.data import rl_dataset  # noqa: E402
from cat_experiments.training.rl import CatGRPOTrainer, TaskReward  # noqa: E402

MODEL = SimpleNamespace(name="tiny", builder="tiny_gpt2", chars="0123456789+-*/=()\\{}boxed .,\n", n_layer=2,
                        n_embd=64, n_head=4, n_positions=64, init_seed=0, load_in_4bit=False, lora=None,
                        gradient_checkpointing=False, trust_remote_code=False, path=None)
HW = SimpleNamespace(device="cpu", dtype="float32", load_in_4bit=False, gradient_checkpointing=False)
DEVICE = {"name": "cpu"}

VARIANTS = {
    "stock TRL GRPO": None,
    "CAT standard (N=1)": lambda: Standard(),
    "CAT pass@16, sequence p (paper)": lambda: PassAtN(16, weight_form="log", p_estimator="sequence", clip=50.0),
    "CAT pass@4, unbiased group p": lambda: PassAtN(4, weight_form="raw", p_estimator="unbiased"),
    "CAT majority N=8, dynamic k": lambda: Majority(8, k=None, clip=10.0, mean_normalize=True),
    "CAT best-of-8, history q": lambda: BestOfN(8, q_estimator="history", mean_normalize=True),
}


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times: list[float] = []

    def on_step_begin(self, args, state, control, **kw):
        self._t = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        self.times.append(time.perf_counter() - self._t)


def run_variant(name, make_strategy, steps, cache, task, ds):
    torch.manual_seed(0)
    hw = SimpleNamespace(**{**vars(HW), "device": DEVICE["name"]})
    model, tok = load_model_and_tokenizer(MODEL, hw, cache)
    with tempfile.TemporaryDirectory() as out:
        args = GRPOConfig(output_dir=out, max_steps=steps, per_device_train_batch_size=64, num_generations=8,
                          max_completion_length=12, learning_rate=1e-4, logging_steps=1000, save_strategy="no",
                          report_to="none", seed=0, use_cpu=DEVICE["name"] == "cpu", bf16=DEVICE["name"] == "cuda", gradient_checkpointing=False, disable_tqdm=True,
                          loss_type="luspo", log_completions=False)
        timer = StepTimer()
        if make_strategy is None:
            trainer = GRPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok,
                                  reward_funcs=[TaskReward(task)], callbacks=[timer])
        else:
            trainer = CatGRPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, task=task,
                                     strategy=make_strategy(), callbacks=[timer])
        trainer.train()
    return timer.times[3:]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    a = ap.parse_args(argv)
    DEVICE["name"] = a.device
    task = ArithmeticTask()
    ds = rl_dataset(task.train_rows(), use_chat_template=False)
    cache = Path(tempfile.gettempdir()) / "cat_bench_cache"
    times: dict[str, list[float]] = {n: [] for n in VARIANTS}
    names = list(VARIANTS)
    for r in range(a.rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            times[name] += run_variant(name, VARIANTS[name], a.steps, cache, task, ds)
            print(f"  round {r + 1}: {name} done", file=sys.stderr)
    base = statistics.median(times["stock TRL GRPO"])
    where = torch.cuda.get_device_name() if a.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"\nGRPO step time, tiny GPT-2, 64 rollouts x 12 tokens, {where}, "
          f"{a.rounds} rounds x {a.steps - 3} timed steps\n")
    print("| trainer | median ms/step | ratio to stock |")
    print("|---|---|---|")
    for name in names:
        med = statistics.median(times[name])
        print(f"| {name} | {1000 * med:.1f} | {med / base:.3f} |")


if __name__ == "__main__":
    main()
