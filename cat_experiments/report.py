"""The report command: ``python -m cat_experiments.report DIR [--out OUTDIR]`` aggregates a grid's
records, ``python -m cat_experiments.report plot-h RUN_DIR`` plots a protein run's h-distributions, and
``python -m cat_experiments.report methods SWEEP_DIR`` prints the methods comparison of a
``experiment=methods`` sweep (records/methods.py: each method at its target N and every budget, its paired
gain over standard ± SE, the pass@1 tax and the test-time scaling efficiency; methods.{md,csv,png}).

``DIR`` is a run dir or a Hydra multirun dir; every ``results.json`` under it is read (records only,
never models; records/grid.py says how rows are labelled and merged over seeds). Writes ``report.csv``,
``report.md`` and ``report.png`` into ``--out`` (default ``DIR``) and prints the markdown. When an
experiment is one of the paper's (the MATH and protein presets), the grid is also rendered in the
paper's table shape beside the paper's numbers (records/paper.py) into ``paper.{md,csv,png}``, appended
to ``report.md``. The paper's numbers come from ``--paper PATH``, by default the copy shipped with the
package (``--no-paper`` skips this). ``--wandb`` logs the tables and plots to a W&B run (offline
without a key or network; ``--wandb-mode``/``--wandb-project``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .records.grid import Report, branch_label, build_report, find_results, render_markdown, write_report
from .records.paper import (
    PAPER_KEYS,
    PaperTable,
    default_paper_path,
    load_paper,
    paper_row_name,
    paper_tables,
    render_paper_markdown,
    write_paper_tables,
)
from .records.wandb_log import log_report_wandb

__all__ = [
    "PAPER_KEYS", "PaperTable", "Report", "branch_label", "build_report", "default_paper_path", "find_results",
    "load_paper", "log_report_wandb", "main", "methods_main", "paper_row_name", "paper_tables", "plot_h_main",
    "render_markdown",
    "render_paper_markdown", "write_paper_tables", "write_report",
]


def plot_h_main(argv: Sequence[str]) -> int:
    """``plot-h RUN_DIR``: plot a protein run's h distributions from its stored evaluation pools."""
    from .records.proteins import plot_h_for_run

    parser = argparse.ArgumentParser(prog="python -m cat_experiments.report plot-h",
                                     description="h distributions of a protein run's stored evaluation pools")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="the png (default: RUN_DIR/h_distribution.png)")
    args = parser.parse_args(argv)
    png, stats = plot_h_for_run(args.run_dir, args.out)
    print(png)
    print(json.dumps(stats, indent=2))
    return 0


def methods_main(argv: Sequence[str]) -> int:
    """``methods SWEEP_DIR``: the methods comparison table (records/methods.py) of a sweep's records."""
    from .records.methods import build_methods_table
    from .records.methods_plot import write_methods_report

    parser = argparse.ArgumentParser(prog="python -m cat_experiments.report methods",
                                     description="Compare RL methods with standard GRPO, paired by seed: each method "
                                     "at its target N and every budget, gain ± SE, pass@1 tax, test-time scaling "
                                     "efficiency; writes methods.{md,csv,png}")
    parser.add_argument("dir", type=Path, help="a multirun dir of experiment=methods (any dir of results.json)")
    parser.add_argument("--out", type=Path, default=None, help="where to write methods.{md,csv,png} (default: DIR)")
    parser.add_argument("--title", default=None, help="the table's heading (default: 'Methods compared')")
    args = parser.parse_args(argv)
    table = build_methods_table(args.dir)
    out = args.out if args.out is not None else (args.dir if args.dir.is_dir() else args.dir.parent)
    paths = write_methods_report(table, out, args.title)
    sys.stdout.write(paths["md"].read_text(encoding="utf-8"))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["plot-h"]:
        return plot_h_main(argv[1:])
    if argv[:1] == ["methods"]:
        return methods_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m cat_experiments.report",
        description="Aggregate results.json records (a run dir or a Hydra multirun dir) into report.{md,csv,png}. "
        "`plot-h RUN_DIR` plots a protein run's h-distributions (see `plot-h --help`); `methods SWEEP_DIR` "
        "compares RL methods with standard (see `methods --help`).",
    )
    parser.add_argument("dir", type=Path, help="a run dir or a multirun dir holding results.json files")
    parser.add_argument("--out", type=Path, default=None, help="where to write the report (default: DIR)")
    parser.add_argument(
        "--paper",
        type=Path,
        default=None,
        help="the paper's numbers (default: the copy shipped in cat_experiments/data/)",
    )
    parser.add_argument(
        "--paper-key",
        default=None,
        help="compare with this table of the paper file (default: by experiment name, PAPER_KEYS)",
    )
    parser.add_argument("--no-paper", action="store_true", help="skip the comparison with the paper")
    parser.add_argument(
        "--wandb", action="store_true", help="also log the report to W&B (offline without key/network)"
    )
    parser.add_argument("--wandb-project", default="cat-experiments")
    parser.add_argument("--wandb-entity", default=None)
    parser.add_argument("--wandb-mode", default="auto", choices=["auto", "online", "offline", "disabled"])
    args = parser.parse_args(argv)
    report = build_report(args.dir)
    out = args.out if args.out is not None else (args.dir if args.dir.is_dir() else args.dir.parent)
    tables: list[PaperTable] = []
    paper_path = None
    if not args.no_paper:
        paper_path = args.paper or default_paper_path()
        if Path(paper_path).is_file():
            tables = paper_tables(report, load_paper(paper_path), key=args.paper_key)
        elif args.paper is not None:
            raise SystemExit(f"cat_experiments.report: --paper {args.paper}: file not found")
    paths = write_report(report, out)
    if tables:
        paths.update(write_paper_tables(tables, out, paper_path))
        with open(paths["md"], "a", encoding="utf-8") as fh:
            fh.write("\n" + paths["paper_md"].read_text(encoding="utf-8"))
    sys.stdout.write(paths["md"].read_text(encoding="utf-8"))
    if args.wandb:
        run = log_report_wandb(
            report, paths, tables, project=args.wandb_project, mode=args.wandb_mode, entity=args.wandb_entity
        )
        if run is not None:
            print(f"W&B: logged the report to run {run.id} ({run.dir})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
