"""Models: builders of tiny local models (tiny.py, protein.py) and the loader of any causal LM (loading.py).

Nothing here imports the pipeline, a trainer or the reports: models sit upstream of all of them.
"""

from .loading import (
    DTYPES,
    add_lora,
    device_for,
    load_model,
    load_model_and_tokenizer,
    load_tokenizer,
    wants_4bit,
    wants_checkpointing,
)
from .tiny import (
    SPECIALS,
    TINY_MISTRAL_CHAT_TEMPLATE,
    build_char_tokenizer,
    build_tiny_model,
    resolve_model_path,
)

__all__ = [
    "DTYPES", "SPECIALS", "TINY_MISTRAL_CHAT_TEMPLATE", "add_lora", "build_char_tokenizer", "build_tiny_model",
    "device_for", "load_model", "load_model_and_tokenizer", "load_tokenizer", "resolve_model_path", "wants_4bit",
    "wants_checkpointing",
]
