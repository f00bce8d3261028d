"""The QLoRA path of model=mistral7b_qlora, run on CPU through a tiny random Mistral built locally
(model=tiny_mistral) and loaded by the same code in NF4 4-bit with bitsandbytes."""

from __future__ import annotations

import string

import pytest
import torch
from conftest import compose

from cat_experiments.models import load_model, load_model_and_tokenizer

bnb = pytest.importorskip("bitsandbytes")

TINY_4BIT = ["model=tiny_mistral", "hardware=cpu", "model.load_in_4bit=true", "model.n_layer=1",
             "model.n_embd=64", "model.n_head=4"]
ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")


def _leaf(name: str) -> str:
    parts = name.split(".")
    return parts[-2] if parts[-1] == "base_layer" else parts[-1]


def linear4bit_layers(model) -> dict[str, object]:
    return {name: m for name, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}


def lora_modules(model) -> set[str]:
    """The leaf names (q_proj, ...) of the modules that carry a LoRA adapter."""
    return {name.split(".")[-1] for name, m in model.named_modules() if hasattr(m, "lora_A") and len(m.lora_A)}


def check_qlora(model, targets):
    layers = linear4bit_layers(model)
    assert layers, "no bitsandbytes Linear4bit layer: the model was not quantised"
    assert {_leaf(n) for n in layers} == set(ATTN) | set(MLP)  # every projection is NF4 4-bit
    for layer in layers.values():
        assert layer.weight.quant_type == "nf4"
        assert layer.weight.compress_statistics  # double quantisation
        assert layer.support_avx512bf16_for_cpu is False  # the CPU backward fix (environment.md)
    assert lora_modules(model) == set(targets)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable), trainable
    assert {n.split(".lora_")[0].split(".")[-1] for n in trainable} == set(targets)


def chat_prompt(tok, text: str) -> str:
    return tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)


def generate_then_train_step(model, tok) -> None:
    """A sampled generate (eval mode, no grad), then a training forward/backward/optimizer step."""
    prompt = chat_prompt(tok, "What is $\\frac{1}{2} + 3^2$?")
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
    model.eval()
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=6, do_sample=True, pad_token_id=tok.pad_token_id)
    assert out.shape[1] > ids["input_ids"].shape[1]
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=1e-2)
    batch = tok(prompt + "\\boxed{9.5}", return_tensors="pt", add_special_tokens=False)
    loss = model(**batch, labels=batch["input_ids"]).loss
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in params if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    opt.step()
    assert any(not torch.equal(a, p.detach()) for a, p in zip(before, params, strict=True))


def test_tiny_mistral_tokenizer_has_a_chat_template_and_covers_math_text(tmp_path):
    cfg = compose(TINY_4BIT)
    assert cfg.model.use_chat_template
    assert set(string.digits + string.ascii_letters + string.punctuation + " \n\t") <= set(cfg.model.chars)
    _, tok = load_model_and_tokenizer(cfg.model, cfg.hardware, tmp_path, for_training=False)
    prompt = chat_prompt(tok, "Find $x$ if $\\sqrt{x} = 3$.")
    assert prompt == "[BOS][INST] Find $x$ if $\\sqrt{x} = 3$. [/INST]"
    full = tok.apply_chat_template([{"role": "user", "content": "q"}, {"role": "assistant", "content": "\\boxed{9}"}],
                                   tokenize=False)
    assert full == "[BOS][INST] q [/INST]\\boxed{9}[EOS]"
    text = "Let $f(x) = \\left\\{ 3x^2 - 7 & \\text{if } x<0, \\right.$ [asy] draw((0,0)--(1,1)); [/asy] #5 @ ~`|'\""
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in ids and tok.decode(ids) == text


def test_tiny_mistral_loads_in_4bit_with_lora_on_the_configured_modules(tmp_path):
    cfg = compose(TINY_4BIT)
    model, tok = load_model_and_tokenizer(cfg.model, cfg.hardware, tmp_path)
    assert model.config.model_type == "mistral"
    check_qlora(model, ATTN)
    q = model.config.quantization_config
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_compute_dtype == torch.float32  # from hardware.dtype (cpu: float32)


def test_rl_presets_put_lora_r16_a32_on_q_and_v(tmp_path):
    for preset in ("math_passn_rl", "math_majority_rl"):
        cfg = compose([f"experiment={preset}"])
        assert (cfg.model.lora.r, cfg.model.lora.alpha, list(cfg.model.lora.target_modules)) == \
            (16, 32, ["q_proj", "v_proj"])
    cfg = compose(["experiment=math_passn_rl", *TINY_4BIT])  # the preset's LoRA on the tiny model
    model, _ = load_model_and_tokenizer(cfg.model, cfg.hardware, tmp_path)
    check_qlora(model, ("q_proj", "v_proj"))
    lora = next(m for _, m in model.named_modules() if hasattr(m, "lora_A") and len(m.lora_A))
    assert lora.r["default"] == 16 and lora.scaling["default"] == pytest.approx(32 / 16)


@pytest.mark.parametrize("dims", [["model.n_embd=64", "model.n_head=4"], ["model.n_embd=32", "model.n_head=2"]])
def test_forward_backward_after_generate_in_4bit(dims, tmp_path):
    # 32 wide: layers narrower than bitsandbytes' 64-wide quantisation block, where the CPU fast path that
    # support_avx512bf16_for_cpu=False turns off fails at the first eval-mode forward (seen with bnb 0.50).
    cfg = compose([*TINY_4BIT, *dims])
    model, tok = load_model_and_tokenizer(cfg.model, cfg.hardware, tmp_path)
    generate_then_train_step(model, tok)
    generate_then_train_step(model, tok)  # and again: generate after a training step, then train


def test_warmup_checkpoint_reloads_trainable(tmp_path):
    cfg = compose(TINY_4BIT)
    model, tok = load_model_and_tokenizer(cfg.model, cfg.hardware, tmp_path / "cache")
    generate_then_train_step(model, tok)  # lora_B moves away from its zero init
    saved = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    ckpt = tmp_path / "warmup" / "final"
    model.save_pretrained(ckpt)  # what the warmup stage leaves: a LoRA adapter + the tokenizer
    tok.save_pretrained(ckpt)
    assert (ckpt / "adapter_config.json").exists() and not (ckpt / "config.json").exists()

    again, tok2 = load_model_and_tokenizer(cfg.model, cfg.hardware, tmp_path / "cache", path=str(ckpt))
    check_qlora(again, ATTN)
    loaded = {n: p.detach() for n, p in again.named_parameters() if "lora_" in n}
    assert loaded.keys() == saved.keys()
    assert all(torch.equal(loaded[n], saved[n]) for n in saved)
    assert tok2.chat_template == tok.chat_template
    generate_then_train_step(again, tok2)  # the branch trains on from the warmup adapter

    frozen, _ = load_model_and_tokenizer(cfg.model, cfg.hardware, tmp_path / "cache", path=str(ckpt),
                                         for_training=False)  # eval: no trainable parameter
    assert linear4bit_layers(frozen) and not any(p.requires_grad for p in frozen.parameters())


def test_mistral7b_qlora_builds_the_papers_quantisation(monkeypatch):
    """The real hub model cannot be downloaded here: capture what load_model asks transformers for."""
    import transformers

    cfg = compose(["experiment=math_passn_sft"])
    m = cfg.model
    assert m.name == "mistral7b_qlora" and m.path == "mistralai/Mistral-7B-Instruct-v0.2" and m.builder is None
    assert m.load_in_4bit and m.bnb_4bit_quant_type == "nf4" and m.bnb_4bit_use_double_quant
    assert m.gradient_checkpointing and m.use_chat_template
    assert (m.lora.r, m.lora.alpha, list(m.lora.target_modules)) == (16, 16, ["q_proj", "k_proj", "v_proj", "o_proj"])
    assert cfg.hardware.name == "gpu_4bit" and cfg.hardware.dtype == "bfloat16"
    seen = {}

    class Stop(Exception):
        pass

    def fake_from_pretrained(path, **kwargs):
        seen.update(kwargs, path=path)
        raise Stop

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake_from_pretrained)
    hardware = compose(["hardware=gpu_4bit", "hardware.device=cpu"]).hardware  # no GPU here
    with pytest.raises(Stop):
        load_model(m.path, m, hardware)
    q = seen["quantization_config"]
    assert seen["path"] == "mistralai/Mistral-7B-Instruct-v0.2" and seen["dtype"] == torch.bfloat16
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_compute_dtype == torch.bfloat16  # the compute dtype comes from the hardware group
