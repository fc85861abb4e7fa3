"""Human-readable tables (rich) for conversion results and target lists."""

from __future__ import annotations

import sys

from rich.console import Console as _RichConsole
from rich.table import Table


def Console() -> _RichConsole:
    """Stdout console; wide enough for the tables when output goes to a file or pipe."""
    return _RichConsole(width=None if sys.stdout.isatty() else 200)


def _mb(n: int | None) -> str:
    return "—" if n is None else f"{n / 1e6:.2f} MB"


def conversion_table(results, title: str = "Conversions") -> None:
    t = Table(title=title)
    for col in ("target", "backend", "precision", "size", "agreement", "max |Δp|", "time", "status"):
        t.add_column(col, justify="right" if col in ("size", "agreement", "max |Δp|", "time") else "left")
    for r in results:
        v = r.verification or {}
        agree = f"{v['agreement']:.1%} of {v['images']}" if "agreement" in v else "not verified"
        if v.get("mode") == "distribution":  # undecided (untrained) source: top-1 is noise, gated on |Δp|
            agree = f"n/a, |Δp| gate ({v['images']})"
        diff = f"{v['max_abs_diff']:.4f}" if "max_abs_diff" in v else "—"
        status = "ok" if r.ok else "FAILED"
        t.add_row(r.target, r.backend, r.precision, _mb(r.size_bytes), agree, diff, f"{r.seconds:.1f}s", status)
    Console().print(t)
    for r in results:
        if r.drop_pp is not None:
            kept = (
                (
                    f"{len(r.float_layers)} layer(s) kept in float ({100 * r.float_mac_share:.1f}% of MACs): "
                    f"{', '.join(r.float_layers)}"
                )
                if r.float_layers
                else "no layer kept in float"
            )
            Console().print(f"{r.target}: top-1 drop {r.drop_pp:.2f} pp on the validation images; {kept}", highlight=False)
    for r in results:
        if not r.ok:
            Console().print(f"[red]FAILED[/red] {r.error}", highlight=False)


def targets_table(profiles) -> None:
    t = Table(title="Built-in targets")
    for col in ("name", "backend", "precision", "in/out", "hardware", "description"):
        t.add_column(col, no_wrap=col != "description")
    for p in profiles:
        t.add_row(
            p.name, p.backend, p.precision.value, f"{p.input_dtype.value}/{p.output_dtype.value}", p.hardware, p.description
        )
    Console().print(t)


def gate_table(results) -> None:
    t = Table(title="Accuracy gates")
    for col in ("target", "gate", "value", "limit", "result"):
        t.add_column(col, justify="right" if col in ("value", "limit") else "left")
    for r in results:
        value = "—" if r.value is None else f"{r.value + 0.0:.4g}"
        limit = "—" if r.limit is None else f"{r.limit:.4g}"
        result = ("pass" if r.passed else "[red]FAIL[/red]") + (f" ({r.note})" if r.note else "")
        t.add_row(r.target, r.gate, value, limit, result)
    Console().print(t)
