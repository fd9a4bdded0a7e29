"""Experiment grids: models × experiments (tasks, KB, arms), run resumably through lm-eval."""
from lm_eval_kinject.grid.config import GridConfig, load_grid_config
from lm_eval_kinject.grid.runner import GridRun, run_grid

__all__ = ["GridConfig", "GridRun", "load_grid_config", "run_grid"]
