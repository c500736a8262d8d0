"""Grid search over `FinetuneConfig` fields (`mft sweep`) and multi-seed runs (`mft finetune --seeds`).

A sweep runs one `finetune` per cell of the grid (the product of its axes) into
`sweep_<name>/cells/<cell-id>/`, a finetune results folder each, and writes beside them:

    sweep.json         the grid, the fixed settings and every cell's status (updated after each cell)
    sweep.csv          one row per cell: axis values, status, metrics on both halves and the whole split
    summary.txt        the best cell and the table
    sweep_heatmap.png  (2-D grids) the primary metric on the scoring and the evaluation half
    results.json       config, versions, machine, cells and the best cell

Honest evaluation (DESIGN.md): the best cell is the one with the highest primary metric on the seeded
scoring half of the validation split; its figures are reported on the other, evaluation half (the whole
split is shown beside them for comparison with published numbers, but it contains the scoring half).

Resuming: a cell is finished when `cells/<cell-id>/results.json` exists. A cell is trained in
`cells/.<cell-id>.run/` and renamed into place only when its run succeeded, so an interrupted sweep
(Ctrl-C, kill) leaves finished cells intact; `sweep(..., resume=DIR)` or re-running with the same `out`
and `name` runs only the cells that are not finished. A cell that fails (bad value for this model, out of
memory) is recorded as failed and the sweep goes on; a resumed sweep tries it again.

Multi-seed runs (`finetune_seeds`) are a sweep over `seed` with a different summary: the mean and a
percentile-bootstrap 95% CI of every metric across seeds (evaluate/bootstrap.py).
"""
from __future__ import annotations

from .grid import (
           CELLS_DIR,
           LOWER_IS_BETTER,
           SWEEP_FILE,
           Cell,
           SweepConfig,
           cell_id,
           format_value,
           parse_grid,
           parse_value,
)
from .report import best_cell, plot_sweep_heatmap, sweep_summary, table_rows, write_csv
from .runs import CellProgress, SweepResult, load_record, run_cell, sweep
from .seeds import SeedsResult, finetune_seeds, parse_seeds, seeds_summary

__all__ = [
           "CELLS_DIR",
           "LOWER_IS_BETTER",
           "SWEEP_FILE",
           "Cell",
           "CellProgress",
           "SeedsResult",
           "SweepConfig",
           "SweepResult",
           "best_cell",
           "cell_id",
           "finetune_seeds",
           "format_value",
           "load_record",
           "parse_grid",
           "parse_seeds",
           "parse_value",
           "plot_sweep_heatmap",
           "run_cell",
           "seeds_summary",
           "sweep",
           "sweep_summary",
           "table_rows",
           "write_csv",
]
