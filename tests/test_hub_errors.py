"""A hub model or dataset that cannot be had is one line naming the setting, the offline variables and
what to do (cat_experiments/hub.py). Every check runs with the hub offline and ids that exist nowhere:
no network is used."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT, TINY

from cat_experiments.hub import HubError, hub_error, hub_failure, hub_needs

OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
FAKE_MODEL = "cat-experiments-test/no-such-model"
FAKE_DATA = "cat-experiments-test/no-such-dataset"


def cli(args, tmp_path):
    """main as `make run` starts it (the Makefile's offline variables), in an empty hub cache."""
    env = {**os.environ, **OFFLINE, "HF_HOME": str(tmp_path / "hf_home"), "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "cat_experiments.main", *args, "logger=none",
                           f"cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def error_line(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, out.stderr[-3000:]
    return lines[0]


def test_an_offline_hub_model_is_one_line_naming_model_path_and_the_fix(tmp_path):
    line = error_line(cli(["model=mistral7b_qlora", f"model.path={FAKE_MODEL}", "hardware=cpu",
                           "model.load_in_4bit=false", "model.lora=null", *TINY[:2]], tmp_path))
    assert line.startswith(f"error: model.path='{FAKE_MODEL}': the model is not in the local cache "
                           f"(HF_HOME={tmp_path / 'hf_home'})")
    assert "HF_HUB_OFFLINE=1, TRANSFORMERS_OFFLINE=1, HF_DATASETS_OFFLINE=1 forbid downloading it" in line
    assert f"`HF_HUB_OFFLINE=0 TRANSFORMERS_OFFLINE=0 HF_DATASETS_OFFLINE=0 hf download {FAKE_MODEL}`" in line
    assert "or set model.path to a local model directory" in line
    assert line.endswith(f"This config takes from the hub: model.path={FAKE_MODEL}.")


def test_an_offline_hub_dataset_is_one_line_naming_dataset_hub_id_and_the_fix(tmp_path):
    line = error_line(cli(["dataset=math", f"dataset.hub_id={FAKE_DATA}", "dataset.hub_configs=null",
                           f"dataset.test_hub_id={FAKE_DATA}-test"], tmp_path))
    assert line.startswith(f"error: dataset.hub_id='{FAKE_DATA}': the dataset is not in the local cache")
    assert "forbid downloading it (ConnectionError: " in line
    assert f'`make run {" ".join(f"{k}=0" for k in OFFLINE)} ARGS="..."`' in line
    assert "or set dataset.path and dataset.test_path to local JSONL files" in line
    assert line.endswith(f"This config takes from the hub: dataset.hub_id={FAKE_DATA}, "
                         f"dataset.test_hub_id={FAKE_DATA}-test.")
    # the test split's own hub id is named when the training split is a local file
    fixture = ROOT / "tests" / "fixtures" / "math500_test.jsonl"
    line = error_line(cli(["dataset=math", f"dataset.path={fixture}", f"dataset.test_hub_id={FAKE_DATA}-test"],
                          tmp_path))
    assert line.startswith(f"error: dataset.test_hub_id='{FAKE_DATA}-test': the dataset is not in the local cache")


def test_hub_errors_online_malformed_ids_and_unrelated_errors(monkeypatch):
    from huggingface_hub.errors import HFValidationError

    for var in OFFLINE:
        monkeypatch.delenv(var, raising=False)
    try:
        raise OSError("We couldn't connect to 'https://huggingface.co'") from ConnectionError("timed out")
    except OSError as err:
        assert isinstance(hub_failure(err), ConnectionError)
        online = hub_error("model.path", FAKE_MODEL, err)
    assert isinstance(online, HubError) and "\n" not in str(online)
    assert str(online) == (f"model.path='{FAKE_MODEL}': cannot get the model from the Hugging Face hub "
                           "(ConnectionError: timed out). Check the id and the network (a mirror: HF_ENDPOINT), "
                           "or set model.path to a local model directory.")
    bad = OSError("Repo id must be in the form 'repo_name' or 'namespace/repo_name'")
    bad.__cause__ = HFValidationError("Repo id must be in the form 'repo_name' or 'namespace/repo_name'")
    assert isinstance(hub_failure(bad), HFValidationError)
    assert hub_failure(RuntimeError("CUDA out of memory")) is None  # not the hub's: re-raised as it is
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "HF_HUB_OFFLINE=1 forbids downloading it" in str(hub_error("dataset.hub_id", FAKE_DATA, bad, "dataset"))


def test_load_model_and_tokenizer_names_model_path(tmp_path):
    """In process (conftest sets the offline variables before the hub library is imported)."""
    from conftest import compose

    from cat_experiments.models import load_model_and_tokenizer

    if os.environ.get("HF_HUB_OFFLINE") != "1":
        pytest.skip("the hub is not offline in this process")
    cfg = compose(["model=mistral7b_qlora", "model.path=not a//valid id", "hardware=cpu"])
    with pytest.raises(HubError, match=r"^model.path='not a//valid id': .*\(HFValidationError: Repo id must"):
        load_model_and_tokenizer(cfg.model, cfg.hardware, tmp_path)
    assert hub_needs(cfg) == ["model.path=not a//valid id"]
    assert hub_needs(compose([])) == []  # the embedded default takes nothing from the hub
