"""The typed records the toolkit writes and reads back: an artifact's ``Manifest`` (with its
``TensorSpec``s, ``Verification`` and ``BudgetRecord``) and the evaluation ``Report`` with its
``ReportRow``s. Each is a frozen dataclass with ``to_dict()`` (the JSON on disk, unknown keys
kept) and ``from_dict()``, the one place that JSON is checked when read back: a malformed record
is a one-line ``BadInput`` naming the file and the field. Stdlib only (the device path imports
this through ``artifact``)."""

from __future__ import annotations

from .base import RecordError, is_finite_number, is_whole, plain_name, relative_file
from .budget import BudgetAttempt, BudgetRecord
from .manifest import MANIFEST, MANIFEST_SCHEMA, MANIFEST_VERSION, Manifest, TensorSpec
from .report import REPORT_SCHEMA, REPORT_VERSION, Report, ReportRow
from .verification import Verification

__all__ = [
    "MANIFEST",
    "MANIFEST_SCHEMA",
    "MANIFEST_VERSION",
    "REPORT_SCHEMA",
    "REPORT_VERSION",
    "BudgetAttempt",
    "BudgetRecord",
    "Manifest",
    "RecordError",
    "Report",
    "ReportRow",
    "TensorSpec",
    "Verification",
    "is_finite_number",
    "is_whole",
    "plain_name",
    "relative_file",
]
