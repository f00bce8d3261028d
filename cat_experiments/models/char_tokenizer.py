"""The character-level tokenizer of every tiny model (one token per character, plus specials)."""

from __future__ import annotations

SPECIALS = ["[PAD]", "[BOS]", "[EOS]", "[UNK]"]


def build_char_tokenizer(chars: str):
    """A character-level fast tokenizer: one token per character, plus PAD/BOS/EOS/UNK."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS + list(dict.fromkeys(chars)))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="[UNK]"))
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", bos_token="[BOS]",
                                   eos_token="[EOS]", unk_token="[UNK]")
