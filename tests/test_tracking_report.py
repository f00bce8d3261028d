"""Run records (results.json / scaling.csv / scaling.png), the report, and W&B helpers (offline only)."""

from __future__ import annotations

import csv
import json
import math
import statistics

import pytest
from matplotlib.colors import to_hex

from cat_experiments import report as report_mod
from cat_experiments.records import (
    finish_wandb,
    grid,
    init_wandb,
    load_results,
    log_results_wandb,
    make_wandb_callback,
    plots,
    resolve_wandb_mode,
    settings,
    wandb_log,
    write_records,
)


def _results(strategy="pass_at_n", n=4, seed=0, branches=None, **extra):
    return {
        "experiment": "demo",
        "strategy": strategy,
        "target_n": n,
        "seed": seed,
        "objective": "sft",
        "task": "arithmetic",
        "pool_size": 8,
        "branches": branches
        or {
            "warmup": {"pass@k": {1: 0.1, 2: 0.2, 8: 0.4}, "maj@k": {1: 0.1, 2: 0.1, 8: 0.15}},
            "cat": {"pass@k": {1: 0.05, 2: 0.25, 8: 0.6}, "maj@k": {1: 0.05, 2: 0.05, 8: 0.1}},
        },
        **extra,
    }


# ----------------------------------------------------------------------------- records


def test_write_records_roundtrip(tmp_path):
    res = _results(train_stats={"loss": 0.5}, config={"model": {"name": "tiny"}, "budgets": (1, 2)})
    paths = write_records(tmp_path / "run", res)
    assert {p.name for p in paths.values()} == {"results.json", "scaling.csv", "scaling.png"}
    raw = json.loads((tmp_path / "run" / "results.json").read_text())
    assert raw["branches"]["cat"]["pass@k"] == {"1": 0.05, "2": 0.25, "8": 0.6}
    assert raw["config"] == {"model": {"name": "tiny"}, "budgets": [1, 2]}
    loaded = load_results(tmp_path / "run" / "results.json")
    assert loaded["branches"] == res["branches"]
    assert all(isinstance(k, int) for c in loaded["branches"]["warmup"].values() for k in c)
    assert loaded["train_stats"] == {"loss": 0.5} and loaded["seed"] == 0
    assert load_results(tmp_path / "run")["strategy"] == "pass_at_n"  # a run dir works too
    with open(tmp_path / "run" / "scaling.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * 2 * 3
    assert rows[0].keys() == {"branch", "metric", "budget", "value"}
    assert {"branch": "cat", "metric": "pass@k", "budget": "8", "value": "0.6"} in rows
    png = (tmp_path / "run" / "scaling.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    assert not list((tmp_path / "run").glob("*.tmp"))
    with pytest.raises(ValueError, match="branches"):
        write_records(tmp_path / "bad", {k: v for k, v in res.items() if k != "branches"})


# ----------------------------------------------------------------------------- report

# job -> (strategy, N); every job runs seeds 0 and 1 (3 jobs x 2 seeds = 6 numbered job dirs)
JOBS = [("pass_at_n", 4), ("majority", 8), ("standard", 1)]


def _cat_value(strategy, seed, k):
    base = {"pass_at_n": 0.2, "majority": 0.1, "standard": 0.3}[strategy]
    return base + 0.2 * seed + 0.01 * k


def _warmup_value(seed, k):
    return 0.05 + 0.1 * seed + 0.01 * k


def _make_multirun(root):
    job = 0
    for strategy, n in JOBS:
        for seed in (0, 1):
            branches = {
                "warmup": {"pass@k": {k: _warmup_value(seed, k) for k in (1, 2, 4)}},
                "cat": {"pass@k": {k: _cat_value(strategy, seed, k) for k in (1, 2, 4)}},
            }
            if strategy != "standard":  # baseline=true: the standard branch, same numbers as the standard job
                branches["standard"] = {"pass@k": {k: _cat_value("standard", seed, k) for k in (1, 2, 4)}}
            write_records(root / str(job), _results(strategy, n, seed, branches))
            job += 1
    (root / "multirun.yaml").write_text("hydra: {}\n")


def test_report_aggregates_multirun(tmp_path, capsys):
    root = tmp_path / "multirun" / "2025-01-01" / "12-00-00"
    _make_multirun(root)
    out = tmp_path / "out"
    assert report_mod.main([str(root), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    md = (out / "report.md").read_text()
    assert printed.strip() == md.strip()
    assert (out / "report.png").stat().st_size > 1000

    with open(out / "report.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["label", "metric", "budget", "mean", "std", "n_seeds"]
    table = {(r["label"], r["metric"], int(r["budget"])): r for r in rows}
    labels = list(dict.fromkeys(r["label"] for r in rows))
    assert labels == ["warmup (CE, stopped)", "standard", "majority(N=8)", "pass_at_n(N=4)"]
    assert len(rows) == 4 * 3
    for label, fn in [
        ("warmup (CE, stopped)", _warmup_value),
        ("standard", lambda s, k: _cat_value("standard", s, k)),
        ("majority(N=8)", lambda s, k: _cat_value("majority", s, k)),
        ("pass_at_n(N=4)", lambda s, k: _cat_value("pass_at_n", s, k)),
    ]:
        for k in (1, 2, 4):
            row = table[(label, "pass@k", k)]
            vals = [fn(0, k), fn(1, k)]
            assert int(row["n_seeds"]) == 2  # duplicates of a (label, seed) across jobs count once
            assert float(row["mean"]) == pytest.approx(statistics.mean(vals))
            assert float(row["std"]) == pytest.approx(statistics.stdev(vals))
    # pass_at_n, k=1: seeds give 0.21 and 0.41 -> 0.310 ± 0.141
    assert "| pass_at_n(N=4) | 0.310 ± 0.141 | 0.320 ± 0.141 | 0.340 ± 0.141 | 2 |" in md
    assert "## pass@k" in md and "## Per seed" in md
    assert "| pass_at_n(N=4) | 1 | 0.410 | 0.420 | 0.440 |" in md

    rep = report_mod.build_report(root)
    assert len(rep.sources) == 6
    mean, std, n = rep.stats["standard"]["pass@k"][2]
    assert (mean, n) == (pytest.approx(0.42), 2) and std == pytest.approx(math.sqrt(0.02))


def test_report_single_run_and_duplicate_seed_average(tmp_path, capsys):
    run = tmp_path / "run"
    write_records(run, _results("best_of_n", 16, seed=3))
    assert report_mod.main([str(run)]) == 0  # default --out is DIR
    md = (run / "report.md").read_text()
    assert "| best_of_n(N=16) | 0.050 | 0.250 | 0.600 | 1 |" in md  # one seed: no ±
    with open(run / "report.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert all(r["std"] == "" and r["n_seeds"] == "1" for r in rows)
    # two jobs with the same label and seed but different numbers: one seed, the values averaged
    write_records(tmp_path / "dup" / "0", _results(seed=0, branches={"cat": {"pass@k": {1: 0.2}}}))
    write_records(tmp_path / "dup" / "1", _results(seed=0, branches={"cat": {"pass@k": {1: 0.4}}}))
    rep = report_mod.build_report(tmp_path / "dup")
    assert rep.stats["pass_at_n(N=4)"]["pass@k"][1][0] == pytest.approx(0.3)
    assert rep.stats["pass_at_n(N=4)"]["pass@k"][1][2] == 1


def _lr_config(lr, seed, job):
    """A resolved config as results.json stores it; what changes per job besides the learning rate is no
    setting: the seed, the seed-linked init seed, run/cache dirs, logging and eval.batch_size."""
    return {
        "seed": seed, "run_name": "demo", "run_dir": f"outputs/multirun/demo/x/{job}", "cache_dir": f"/c/{job}",
        "model": {"name": "tiny", "init_seed": seed, "n_layer": 2},
        "strategy": {"name": "pass_at_n", "n": 4, "k": None, "weight_form": "log"},
        "objective": {"name": "sft", "learning_rate": lr, "max_steps": 100, "save_steps": 50 + job},
        "warmup": {"max_steps": 600, "learning_rate": 1e-3, "logging_steps": job},
        "eval": {"pool_size": 8, "budgets": [1, 2, 4, 8], "temperature": 0.8, "top_p": 0.95, "top_k": 20,
                 "max_new_tokens": 14, "batch_size": 1024 * (job + 1), "engine": "hf"},
        "logger": {"name": "wandb", "group": f"g{job}"},
    }


def _lr_value(branch, lr, seed, k):
    return {"warmup": 0.05, "standard": 0.2, "cat": 0.3}[branch] + (0.2 if lr == 1e-3 and branch != "warmup"
                                                                  else 0.0) + 0.1 * seed + 0.01 * k


def _make_lr_sweep(root, sampling=None):
    """A Hydra sweep dir: objective.learning_rate=1e-3,1e-4 x seed=0,1 (4 jobs, one shared warmup)."""
    job = 0
    for lr in (1e-3, 1e-4):
        for seed in (0, 1):
            branches = {b: {"pass@k": {k: _lr_value(b, lr, seed, k) for k in (1, 2, 4, 8)}}
                        for b in ("warmup", "standard", "cat")}
            extra = {"sampling": sampling} if sampling else {}
            write_records(root / str(job), _results("pass_at_n", 4, seed, branches,
                                                    config=_lr_config(lr, seed, job), **extra))
            job += 1


LR_CAPTION = ("Sampling: temperature 0.8, top-p 0.95, top-k 20, pool size 8, max new tokens 14, engine hf; "
              "N 4; seeds 0, 1 (2).")


def test_report_never_averages_two_learning_rates(tmp_path):
    """Two learning rates x 2 seeds in one sweep dir: a row per learning rate with 2 seeds each, labelled
    by the setting that differs; the warmup (which does not depend on the objective) stays one row."""
    _make_lr_sweep(tmp_path / "sweep")
    rep = report_mod.build_report(tmp_path / "sweep")
    assert rep.labels == [
        "warmup (CE, stopped)",
        "standard [objective.learning_rate=0.0001]",
        "standard [objective.learning_rate=0.001]",
        "pass_at_n(N=4) [objective.learning_rate=0.0001]",
        "pass_at_n(N=4) [objective.learning_rate=0.001]",
    ]
    for label in rep.labels:
        branch = {"warmup": "warmup", "standard": "standard"}.get(label.split(" ")[0], "cat")
        lr = 1e-3 if label.endswith("=0.001]") else 1e-4
        for k in (1, 2, 4, 8):
            mean, std, n = rep.stats[label]["pass@k"][k]
            assert n == 2 and list(rep.per_seed[label]) == [0, 1]
            assert mean == pytest.approx(statistics.mean(_lr_value(branch, lr, s, k) for s in (0, 1)))
            assert std == pytest.approx(statistics.stdev(_lr_value(branch, lr, s, k) for s in (0, 1)))
    assert rep.meta["pass_at_n(N=4) [objective.learning_rate=0.001]"]["settings"] == {
        "objective.learning_rate": "0.001"}
    md = report_mod.render_markdown(rep)
    assert "| pass_at_n(N=4) [objective.learning_rate=0.001] | 0.560 ± 0.071 | 0.570 ± 0.071 |" in md
    assert "| pass_at_n(N=4) [objective.learning_rate=0.0001] | 0 | 0.310 | 0.320 | 0.340 | 0.380 |" in md
    # every table states the sampling: the header, the pass@k table, the per-seed table
    assert md.count(LR_CAPTION) == 3
    assert "temperature 0.8" in grid.report_figure(rep).get_suptitle().replace("\n", " ")
    assert "seeds 0, 1 (2)" in grid.report_figure(rep).get_suptitle().replace("\n", " ")


def test_report_settings_and_sampling_come_from_the_record(tmp_path):
    # results.json["sampling"] (what the eval really used) wins over config.eval
    _make_lr_sweep(tmp_path / "vllm", sampling={"temperature": 0.6, "top_p": 1.0, "top_k": 0, "pool_size": 8,
                                                "max_new_tokens": 14, "engine": "vllm"})
    md = report_mod.render_markdown(report_mod.build_report(tmp_path / "vllm"))
    assert ("Sampling: temperature 0.6, top-p 1.0, top-k 0, pool size 8, max new tokens 14, engine vllm; "
            "N 4; seeds 0, 1 (2).") in md
    rec = _results(seed=1, config=_lr_config(1e-3, 1, 0))
    found = settings.record_settings(rec)
    assert found["objective.learning_rate"] == "0.001" and found["strategy.k"] == "null"
    for key in ("seed", "model.init_seed", "run_dir", "cache_dir", "eval.batch_size", "logger.group",
                "objective.save_steps", "warmup.logging_steps", "eval.budgets"):
        assert key not in found
    assert not any(k.startswith(("strategy.", "objective.")) for k in settings.record_settings(rec, "warmup"))
    assert not any(k.startswith("strategy.") for k in settings.record_settings(rec, "standard"))
    # an init seed that is not the run's seed (a fixed init) is a setting
    fixed = _results(seed=1, config={**_lr_config(1e-3, 1, 0), "model": {"init_seed": 0}})
    assert settings.record_settings(fixed)["model.init_seed"] == "0"
    # a record without a config: its top-level fields
    assert settings.record_settings(_results("majority", 8, strategy_k=3)) == {
        "strategy.name": "majority", "strategy.n": "8", "strategy.k": "3", "objective.name": "sft",
        "dataset.name": "arithmetic", "eval.pool_size": "8"}


# ----------------------------------------------------------------------------- plots: target N, seed bands


def _vlines(ax):
    """The vertical dashed lines of a panel: {x: (label, colour)}."""
    out = {}
    for line in ax.get_lines():
        xs = list(line.get_xdata())
        if line.get_linestyle() == "--" and len(xs) == 2 and xs[0] == xs[1]:
            out[float(xs[0])] = (line.get_label(), to_hex(line.get_color()))
    return out


def _curve(ax, label):
    return next(line for line in ax.get_lines() if line.get_label() == label)


def test_run_plot_marks_the_target_n(tmp_path, monkeypatch):
    figs = []
    real = plots.save_png
    monkeypatch.setattr(plots, "save_png", lambda fig, path: figs.append(fig) or real(fig, path))
    write_records(tmp_path / "cat", _results("majority", 8, branches={
        "standard": {"pass@k": {1: 0.1, 2: 0.2, 8: 0.3, 16: 0.35}, "maj@k": {1: 0.1, 8: 0.2}},
        "cat": {"pass@k": {1: 0.1, 2: 0.2, 8: 0.4, 16: 0.45}, "maj@k": {1: 0.1, 8: 0.3}},
    }))
    axes = figs[-1].axes
    assert [ax.get_title() for ax in axes] == ["pass@k", "maj@k"]
    for ax in axes:  # every panel: one dashed line at x = N, in the CAT branch's colour
        assert _vlines(ax) == {8.0: ("target N=8", to_hex(_curve(ax, "cat").get_color()))}
        assert "target N=8" in [t.get_text() for t in ax.get_legend().get_texts()]
        assert 8 in ax.get_xticks()
    write_records(tmp_path / "std", _results("standard", 1))  # the standard strategy: no target line
    assert all(_vlines(ax) == {} for ax in figs[-1].axes)
    # several branches with the same N share one grey line
    fig = plots.scaling_figure({"a": {"pass@k": {1: 0.1, 4: 0.2}}, "b": {"pass@k": {1: 0.2, 4: 0.3}}},
                               target_n={"a": 4, "b": 4})
    assert _vlines(fig.axes[0]) == {4.0: ("target N=4", to_hex("0.35"))}


SEED_BASE = {0: 0.50, 1: 0.60, 2: 0.80}


def _make_seed_grid(root):
    """pass_at_n(N=4) over seeds 0, 1, 2 (with the standard baseline), majority(N=2) over seed 0 only."""
    for seed in (0, 1, 2):
        write_records(root / str(seed), _results("pass_at_n", 4, seed, {
            "standard": {"pass@k": {k: 0.4 + 0.05 * seed + 0.01 * k for k in (1, 2, 4)}},
            "cat": {"pass@k": {k: SEED_BASE[seed] + 0.01 * k for k in (1, 2, 4)}},
        }))
    write_records(root / "3", _results("majority", 2, 0, {"cat": {"pass@k": {1: 0.3, 2: 0.35, 4: 0.4}}}))


def test_report_plot_mean_and_std_band_over_seeds(tmp_path):
    from matplotlib.collections import PolyCollection

    _make_seed_grid(tmp_path / "grid")
    rep = report_mod.build_report(tmp_path / "grid")
    fig = grid.report_figure(rep)
    (ax,) = fig.axes
    assert "mean ± 1 sample std" in fig.get_suptitle()
    three = "pass_at_n(N=4) (mean ± std, 3 seeds)"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {three, "standard (mean ± std, 3 seeds)", "majority(N=2)"} <= set(legend)
    cat = _curve(ax, three)
    ks = [1, 2, 4]
    means = [statistics.mean(b + 0.01 * k for b in SEED_BASE.values()) for k in ks]
    std = statistics.stdev(SEED_BASE.values())  # the same at every k
    assert list(cat.get_xdata()) == ks and list(cat.get_ydata()) == pytest.approx(means)
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2  # standard and pass_at_n; majority has one seed: a plain line
    band = next(c for c in bands if to_hex(c.get_facecolor()[0]) == to_hex(cat.get_color()))
    verts = band.get_paths()[0].vertices
    for k, m in zip(ks, means, strict=True):
        ys = verts[verts[:, 0] == k][:, 1]
        assert (ys.min(), ys.max()) == (pytest.approx(m - std), pytest.approx(m + std))
    # mixed target N: one dashed line each, in its row's colour
    assert _vlines(ax) == {
        4.0: ("target N=4", to_hex(cat.get_color())),
        2.0: ("target N=2", to_hex(_curve(ax, "majority(N=2)").get_color())),
    }
    # the markdown: values at the target N per seed, standard / CAT
    md = report_mod.render_markdown(rep)
    assert ("- pass@4 per seed (standard / pass_at_n(N=4)): "
            "seed 0 .440/.540, seed 1 .490/.640, seed 2 .540/.840") in md
    assert "- pass@2 per seed (standard / majority(N=2)): seed 0 .420/.350, seed 1 .470/–, seed 2 .520/–" in md
    assert "| pass_at_n(N=4) | 0.643 ± 0.153 | 0.653 ± 0.153 | 0.673 ± 0.153 | 3 |" in md
    assert report_mod.main([str(tmp_path / "grid"), "--no-paper"]) == 0
    assert (tmp_path / "grid" / "report.png").read_bytes()[:4] == b"\x89PNG"


def test_report_errors_on_empty_dir(tmp_path):
    (tmp_path / "empty" / "0").mkdir(parents=True)
    with pytest.raises(SystemExit, match=r"no results\.json found under .*empty"):
        report_mod.main([str(tmp_path / "empty")])
    with pytest.raises(SystemExit, match="missing"):
        report_mod.main([str(tmp_path / "missing")])


def test_branch_label():
    assert report_mod.branch_label("warmup", "majority", 4) == "warmup (CE, stopped)"
    assert report_mod.branch_label("standard", "majority", 4) == "standard"
    assert report_mod.branch_label("cat", "majority", 4) == "majority(N=4)"
    assert report_mod.branch_label("cat", "standard", 1) == "standard"


# ----------------------------------------------------------------------------- W&B


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home" / var.lower()))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    return tmp_path


def test_resolve_mode_never_needs_network(wandb_env, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setattr(
        wandb_log, "_reachable", lambda *a, **k: pytest.fail("no key: must not probe the network")
    )
    assert resolve_wandb_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setattr(wandb_log, "_reachable", lambda *a, **k: False)
    assert resolve_wandb_mode("auto") == "offline"
    monkeypatch.setattr(wandb_log, "_reachable", lambda *a, **k: True)
    assert resolve_wandb_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode("auto") == "disabled"
    assert resolve_wandb_mode("offline") == "offline"
    with pytest.raises(ValueError, match="mode"):
        resolve_wandb_mode("sometimes")


def test_wandb_disabled_is_noop(wandb_env):
    run = init_wandb({"project": "p", "mode": "disabled", "dir": str(wandb_env / "w")}, {"a": 1})
    assert run is None
    log_results_wandb(run, _results())
    cb = make_wandb_callback(run, "sft")
    from transformers import TrainerControl, TrainerState

    cb.on_log(None, TrainerState(), TrainerControl(), logs={"loss": 1.0})
    finish_wandb(run)
    assert init_wandb(None) is None
    assert not (wandb_env / "w" / "wandb").exists()


def test_wandb_offline_run(wandb_env, monkeypatch):
    from transformers import TrainerControl, TrainerState

    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = wandb_env / "run"
    res = _results()
    write_records(run_dir, res)
    cfg = {
        "project": "cat-test",
        "mode": "auto",
        "group": "demo",
        "tags": ["pass_at_n", "sft", "N=4"],
        "dir": str(run_dir),
    }
    run = init_wandb(cfg, {"strategy": {"name": "pass_at_n", "n": 4}})
    assert run is not None
    try:
        assert str(run.dir).startswith(str(run_dir))
        assert run.config["strategy"] == {"name": "pass_at_n", "n": 4}
        log_results_wandb(run, res, run_dir=run_dir)
        assert run.summary["cat/pass@8"] == pytest.approx(0.6)
        assert run.summary["warmup/maj@2"] == pytest.approx(0.1)
        # two trainers in one run, each with its own step axis (warmup reaches step 10, then cat restarts at 1)
        warm, cat = make_wandb_callback(run, "warmup"), make_wandb_callback(run, "cat_train")
        state, control = TrainerState(), TrainerControl()
        for step in (5, 10):
            state.global_step = step
            warm.on_log(None, state, control, logs={"loss": 2.0 / step, "epoch": 1.0, "note": "text"})
        state.global_step = 1
        cat.on_log(None, state, control, logs={"loss": 0.7})
        assert run.summary["warmup/loss"] == pytest.approx(0.2)
        assert run.summary["warmup/step"] == 10
        assert run.summary["cat_train/loss"] == pytest.approx(0.7)
        assert "warmup/note" not in run.summary.keys()
    finally:
        run.finish()
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and any(offline[0].glob("*.wandb"))


def test_wandb_run_id_is_kept_in_the_run_dir_for_requeued_jobs(wandb_env, monkeypatch):
    """A preempted job that starts again in the same run dir logs into the same W&B run."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = {"project": "cat-test", "mode": "auto", "dir": str(wandb_env / "run")}
    first = init_wandb(cfg, {"a": 1})
    first_id = first.id
    first.finish()
    assert (wandb_env / "run" / wandb_log.RUN_ID_FILE).read_text() == first_id
    again = init_wandb(cfg, {"a": 1})
    try:
        assert again.id == first_id
    finally:
        again.finish()
    other = init_wandb({**cfg, "dir": str(wandb_env / "other")}, {"a": 1})
    try:
        assert other.id != first_id
    finally:
        other.finish()
