"""Inspection: a self-contained HTML report of a study."""

from prune_search.report.html import write_report

__all__ = ["write_report"]
