"""Reports of grid runs: the paper's tables and figures, with intervals and paired tests."""
from lm_eval_kinject.report.build import Report, check_expectations, expectations_of, write_report

__all__ = ["Report", "check_expectations", "expectations_of", "write_report"]
