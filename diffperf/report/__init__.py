"""Reports from results files: the run summary, per-model tables, ladder charts, image grids,
run-to-run latency comparison and the generated results document (CLI: tools/report.py).

Everything here reads results files only (no model runs) and is deterministic for the same input.
  common      the error, formatting, case selection, markdown tables
  tables      per-model tables, the run summary, CSV
  charts      ladder bar charts, image grids
  comparison  a run against an older run or a baselines file
  kernels     where a denoising step goes (kernel profiles)
  document    several runs merged into the tier's results document
"""
from ..record import load_results
from .charts import (GRID_GAP, GRID_LABEL_H, LADDER_GROUPS, grid_image, grid_size, group_order, in_cases_py_order,
                     ladder_cases, ladder_png, plot_ladder)
from .common import (Case, ReportError, by_latency, by_memory, display_path, md_table, measured, model_cases, models_of,
                     results_dir, truncate_markdown)
from .comparison import CaseChange, Comparison, compare_runs, comparison_markdown, load_old
from .document import gate_markdown, merge_results, mfu_table, write_all, write_doc
from .tables import (csv_file, model_tables, not_measured_markdown, summary_markdown, tables_markdown,
                     write_run_summary)

__all__ = [
    "GRID_GAP", "GRID_LABEL_H", "LADDER_GROUPS", "Case", "CaseChange", "Comparison", "ReportError", "by_latency",
    "by_memory", "compare_runs", "comparison_markdown", "csv_file", "display_path", "gate_markdown", "grid_image",
    "grid_size", "group_order", "in_cases_py_order", "ladder_cases", "ladder_png", "load_old", "load_results",
    "md_table", "measured", "merge_results", "mfu_table", "model_cases", "model_tables", "models_of",
    "not_measured_markdown", "plot_ladder", "results_dir", "summary_markdown", "tables_markdown",
    "truncate_markdown", "write_all", "write_doc", "write_run_summary",
]
