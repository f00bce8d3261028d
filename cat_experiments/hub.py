"""A model or dataset the config names on the Hugging Face hub that cannot be had, as one line.

The Makefile (and the tests) export ``HF_HUB_OFFLINE=1``, ``TRANSFORMERS_OFFLINE=1`` and
``HF_DATASETS_OFFLINE=1``, so the embedded default never touches the network. A preset that names a hub
model (``model.path``) or dataset (``dataset.hub_id``, ``dataset.test_hub_id``) then finds it only in the
local cache (``HF_HOME``). When it is not there (or the hub is unreachable, or the id is malformed),
:func:`hub_error` turns the library's traceback into a :class:`HubError` whose message names the setting,
the offline variables in force and what to do; ``main`` prints it as one line.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["OFFLINE_VARS", "HubError", "hub_error", "hub_failure", "hub_needs", "offline_settings"]

OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
_ONLINE_AGAIN = " ".join(f"{v}=0" for v in OFFLINE_VARS)


class HubError(OSError):
    """A hub model or dataset could not be had; the message (one line) names the setting and the fix."""


def _failure_types() -> tuple[type[BaseException], ...]:
    from huggingface_hub import errors

    types: list[type[BaseException]] = [
        errors.OfflineModeIsEnabled, errors.LocalEntryNotFoundError, errors.HFValidationError,
        errors.RepositoryNotFoundError, errors.RevisionNotFoundError, ConnectionError, TimeoutError,
    ]
    try:
        from datasets.exceptions import DatasetNotFoundError

        types.append(DatasetNotFoundError)
    except ImportError:  # pragma: no cover - datasets is a dependency
        pass
    return tuple(types)


def hub_failure(err: BaseException) -> BaseException | None:
    """The hub failure (offline, not cached, unreachable, malformed or unknown id) in ``err`` or in its
    causes and contexts; None when ``err`` has nothing to do with the hub."""
    types, seen, todo = _failure_types(), set(), [err]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, types):
            return e
        todo += [e.__cause__, e.__context__]
    return None


def offline_settings() -> list[str]:
    """The offline variables switched on in the environment, as ``NAME=value``."""
    return [f"{v}={os.environ[v]}" for v in OFFLINE_VARS
            if os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")]


def _reason(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:160]}{'...' if len(text) > 160 else ''}"


def hub_error(setting: str, value: Any, err: BaseException, kind: str = "model") -> HubError:
    """One line for a hub ``kind`` ("model" or "dataset") named by ``setting=value`` that failed with ``err``."""
    cause = hub_failure(err) or err
    offline = offline_settings()
    cache = f"HF_HOME={os.environ['HF_HOME']}" if os.environ.get("HF_HOME") else "HF_HOME, by default ~/.cache/huggingface"
    local = ("set model.path to a local model directory" if kind == "model"
             else "set dataset.path and dataset.test_path to local JSONL files")
    if offline:
        get = (f"`{_ONLINE_AGAIN} hf download {value}` (a gated model: `hf auth login` first)" if kind == "model"
               else f"run with {_ONLINE_AGAIN}, e.g. `make run {_ONLINE_AGAIN} ARGS=\"...\"`")
        return HubError(f"{setting}={value!r}: the {kind} is not in the local cache ({cache}) and "
                        f"{', '.join(offline)} {'forbid' if len(offline) > 1 else 'forbids'} downloading it "
                        f"({_reason(cause)}). Get it once with network access: {get}, which fills the cache; "
                        f"or {local}.")
    return HubError(f"{setting}={value!r}: cannot get the {kind} from the Hugging Face hub ({_reason(cause)}). "
                    f"Check the id and the network (a mirror: HF_ENDPOINT), or {local}.")


def hub_needs(cfg: Any) -> list[str]:
    """What a config takes from the hub: ``model.path`` (unless a local dir or a built tiny model) and the
    hub datasets not replaced by local files."""
    needs = []
    model, data = cfg.get("model", {}), cfg.get("dataset", {})
    path = model.get("path")
    if path and not model.get("builder") and not os.path.isdir(os.path.expanduser(str(path))):
        needs.append(f"model.path={path}")
    train = None if data.get("path") else data.get("hub_id")
    test = None if data.get("test_path") else (data.get("test_hub_id") or data.get("hub_id"))
    for setting, hub_id in (("dataset.hub_id", train),
                            ("dataset.test_hub_id" if data.get("test_hub_id") else "dataset.hub_id", test)):
        if hub_id and f"{setting}={hub_id}" not in needs:
            needs.append(f"{setting}={hub_id}")
    return needs
