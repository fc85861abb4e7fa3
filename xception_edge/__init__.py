"""xception-edge: convert, quantize and check Xception image classifiers for edge targets.

The public API (``xe.convert``, ``xe.evaluate``, ``xe.bench``, ``xe.inspect``, ``xe.gate``, ``xe.sweep``) lives in
``xception_edge.api`` and is loaded on first use, so ``import xception_edge`` imports no framework.
"""

__version__ = "0.1.0"

_API = ("convert", "evaluate", "bench", "inspect", "gate", "sweep")
_ERRORS = ("XceptionEdgeError", "BadInput", "BackendUnavailable", "ConversionFailed", "VerificationFailed")
_RECORDS = ("Manifest", "TensorSpec", "Verification", "BudgetRecord", "Report", "ReportRow")  # typed records
__all__ = ["__version__", *_API, *_ERRORS, *_RECORDS]


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    if name in _ERRORS:
        from . import errors

        return getattr(errors, name)
    if name in _RECORDS:
        from . import records

        return getattr(records, name)
    raise AttributeError(f"module 'xception_edge' has no attribute {name!r}")
