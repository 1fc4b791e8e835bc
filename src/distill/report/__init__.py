"""What a run tells a person: the terminal's tables (`text`), and the report a browser opens
(`distill.report.document.make_report`)."""

from distill.report.text import (
    format_diagnosis,
    format_export,
    format_exported_accuracy,
    format_lm_summary,
    format_result,
    format_summary,
    format_tuning,
)

__all__ = [
    "format_diagnosis",
    "format_export",
    "format_exported_accuracy",
    "format_lm_summary",
    "format_result",
    "format_summary",
    "format_tuning",
]
