"""``evaluate --device SPEC``: every artifact also runs on the device, on the same preprocessed
images as on this host. Its row is scored against the Keras reference like the host's row, and
carries the device (``device``, ``device_host``), its latency (``latency_emulated`` when under
QEMU: never gated) and parity with this host's outputs of the same artifact (``parity``)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .. import console
from ..records import Manifest, ReportRow
from . import parity, remote
from .spec import DeviceSpec


@dataclasses.dataclass(frozen=True)
class DeviceRun:
    """Where and how `evaluate` runs the artifacts a second time."""

    spec: DeviceSpec
    timing: remote.Timing
    python: str | None = None
    keep: bool = False
    cache: Path | None = None

    @property
    def settings(self) -> dict:
        """What decides a device row (part of its `--resume` key): the device and the timing."""
        t = self.timing
        return {
            "device": self.spec.label,
            "device_python": self.python,
            "rounds": t.rounds,
            "cooldown": t.cooldown,
            "runs": t.runs,
            "warmup": t.warmup,
        }


def device_row(
    run: DeviceRun,
    folder: Path,
    manifest: Manifest,
    host_row: ReportRow,
    inputs: np.ndarray,
    host_outputs: np.ndarray,
    score: Callable[[np.ndarray], ReportRow],
) -> ReportRow:
    """The artifact's row measured on ``run``'s device: ``inputs`` (every decoded image, in the
    order of ``host_outputs``, this host's outputs) go to the device; its outputs are scored by
    ``score`` (as the host row was) and compared with the host's."""
    from ..benchmark import cpu_mismatch
    from ..hostinfo import host

    t0 = time.perf_counter()
    opened = remote.open_device(run.spec, manifest.backend, python=run.python, keep=run.keep, cache=run.cache)
    found, outputs = remote.run(opened, folder, manifest, inputs, run.timing)
    dev_host = found["host"]
    warning = cpu_mismatch(manifest, machine=dev_host["machine"], flags=dev_host.get("int8_flags", []))
    if warning:
        console.warn(f"{run.spec.label}: {warning}")
    here = host()
    reference = {"target": manifest.target, "machine": here["machine"], "cpu": here["cpu"], "kernels": host_row.cpu_warning}
    record = parity.compare(
        host_outputs, outputs, manifest.output, inputs=f"the {len(inputs)} evaluated images", reference=reference
    )
    if not record["passed"]:
        console.warn(
            f"{host_row.name} on {run.spec.label}: top-1 agrees with this host's on {record['top1_agreement']:.2%} of "
            f"the images (below {record['min_agreement']:.0%})"
        )
    row = score(outputs)
    facts = {**opened.facts, "cpu_core": dev_host.get("cpu_core"), "runtime": dev_host.get("runtime", {})}
    return dataclasses.replace(
        row,
        latency=found["latency"],
        cpu_warning="; ".join(filter(None, [warning, found.get("kernels")])) or None,
        seconds=time.perf_counter() - t0,
        device=facts,
        device_host=dev_host,
        parity=record,
        latency_emulated=run.spec.emulated,
        reused=False,
    )
