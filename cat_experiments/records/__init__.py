"""What runs write and read back, split by job:

- results.py    one run's record: results.json, scaling.csv (write_records, load_results, summary_table)
- plots.py      scaling curves, a grid beside the paper, protein h-distributions
- wandb_log.py  Weights & Biases: runs, training curves, reports (offline without key or network)
- grid.py       aggregate a grid's records over seeds into report.{md,csv,png}
- settings.py   what a record's numbers depend on (its settings, its sampling): the report's row keys
- methods.py    RL methods side by side: paired gains over standard, scaling efficiency
- methods_plot.py  the methods comparison's plot and files
- paper.py      the same grid in the paper's table shape, beside the paper's numbers
- proteins.py   sample a protein run's checkpoints and plot their h-distributions

The command line over all of it is `python -m cat_experiments.report` (report.py).
"""

from .results import REQUIRED_KEYS, load_results, summary_table, write_records
from .wandb_log import finish_wandb, init_wandb, log_results_wandb, make_wandb_callback, resolve_wandb_mode

__all__ = [
    "REQUIRED_KEYS", "finish_wandb", "init_wandb", "load_results", "log_results_wandb", "make_wandb_callback",
    "resolve_wandb_mode", "summary_table", "write_records",
]
