"""``Verification``: the check of an artifact against its source model, as convert runs it
(``verify.compare``) and as the manifest's ``verification`` table records it."""

from __future__ import annotations

import dataclasses

from .base import emit, extra_field, fail, is_finite_number, is_whole, keys_field, split

MODES = ("top1", "distribution")
_NUMBERS = ("agreement", "strict_agreement", "max_abs_diff", "mean_abs_diff", "floor", "reference_max_prob")


@dataclasses.dataclass(frozen=True)
class Verification:
    images: int
    agreement: float  # top-1 agreement with the source model (ties within one output step agree)
    strict_agreement: float  # plain top-1 equality
    max_abs_diff: float  # of dequantized output probabilities
    mean_abs_diff: float
    floor: float
    images_from: str
    reference_max_prob: float  # mean top-1 probability of the source: near 1/classes = untrained
    mode: str = "top1"  # "top1": gated on agreement; "distribution": undecided source, gated on max |Δp|
    max_abs_diff_limit: float | None = None
    kernels: str | None = None  # how the runtime ran the artifact when not with its usual kernels (Runtime.note)
    extra: dict = extra_field()
    _keys: tuple[str, ...] = keys_field()

    @property
    def passed(self) -> bool:
        if self.mode == "distribution":
            return bool(self.max_abs_diff <= self.max_abs_diff_limit)
        return bool(self.agreement >= self.floor)

    def to_dict(self) -> dict:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("extra", "_keys")}
        return {**emit(self, values), "passed": self.passed}

    @classmethod
    def from_dict(cls, d, where, key: str = "verification") -> Verification:
        """The manifest's ``verification`` table (``passed`` is recomputed from the numbers)."""
        if not isinstance(d, dict):
            raise fail(where, key, "a table", d)
        if not is_whole(d.get("images")) or d["images"] < 1:
            raise fail(where, f"{key}.images", "a positive integer", d.get("images"))
        for name in _NUMBERS:
            if not is_finite_number(d.get(name)):
                raise fail(where, f"{key}.{name}", "a finite number", d.get(name))
        if not isinstance(d.get("images_from"), str):
            raise fail(where, f"{key}.images_from", "a string", d.get("images_from"))
        mode = d.get("mode", "top1")
        if mode not in MODES:
            raise fail(where, f"{key}.mode", f"one of {', '.join(MODES)}", mode)
        limit = d.get("max_abs_diff_limit")
        if not (is_finite_number(limit) or (limit is None and mode == "top1")):
            raise fail(where, f"{key}.max_abs_diff_limit", "a finite number (null only in mode top1)", limit)
        if d.get("kernels") is not None and not isinstance(d["kernels"], str):
            raise fail(where, f"{key}.kernels", "a string or null", d["kernels"])
        if "passed" in d and not isinstance(d["passed"], bool):
            raise fail(where, f"{key}.passed", "true or false", d["passed"])
        names = [f.name for f in dataclasses.fields(cls) if f.name not in ("extra", "_keys")]
        extra, keys = split(d, [*names, "passed"])
        given = {n: d[n] for n in names if n in d}
        return cls(**given, extra=extra, _keys=tuple(k for k in keys if k != "passed"))
