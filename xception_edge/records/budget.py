"""``BudgetRecord``: the manifest's ``accuracy_budget`` table, written by ``convert --max-drop``
(``xception_edge/budget.py``): the budget, the validation images, every attempt and the one kept."""

from __future__ import annotations

import dataclasses

from .base import emit, extra_field, fail, is_finite_number, is_text_list, is_whole, keys_field, split

METHOD = "layers ranked by inspect, kept in float by the backend"


@dataclasses.dataclass(frozen=True)
class BudgetAttempt:
    """One conversion of the target: the layers it kept in float, their MAC share, its top-1 drop."""

    float_layers: tuple[str, ...]
    float_mac_share: float
    drop_pp: float
    method: str | None = None  # set when a backend's own accuracy control made it
    extra: dict = extra_field()
    _keys: tuple[str, ...] = keys_field()

    def to_dict(self) -> dict:
        values = {
            "method": self.method,
            "float_layers": list(self.float_layers),
            "float_mac_share": self.float_mac_share,
            "drop_pp": self.drop_pp,
        }
        return emit(self, values, always=lambda key: key != "method")

    @classmethod
    def from_dict(cls, d, where, key: str) -> BudgetAttempt:
        if not isinstance(d, dict):
            raise fail(where, key, "a table", d)
        if not is_text_list(d.get("float_layers")):
            raise fail(where, f"{key}.float_layers", "a list of layer names", d.get("float_layers"))
        for name in ("float_mac_share", "drop_pp"):
            if not is_finite_number(d.get(name)):
                raise fail(where, f"{key}.{name}", "a finite number", d.get(name))
        if d.get("method") is not None and not isinstance(d["method"], str):
            raise fail(where, f"{key}.method", "a string", d["method"])
        extra, keys = split(d, ("method", "float_layers", "float_mac_share", "drop_pp"))
        return cls(tuple(d["float_layers"]), d["float_mac_share"], d["drop_pp"], d.get("method"), extra, keys)


_NUMBERS = ("max_drop_pp", "fp32_top1", "max_float_mac_share", "drop_pp", "float_mac_share")


@dataclasses.dataclass(frozen=True)
class BudgetRecord:
    """The budget (``max_drop_pp`` on ``validation_images`` labelled images of ``validation``, the
    Keras model's top-1 ``fp32_top1`` there, at most ``max_float_mac_share`` of the MACs in float),
    the conversion kept (``method``, ``drop_pp``, ``float_layers``, ``float_mac_share``) and every
    attempt in order."""

    method: str
    max_drop_pp: float
    validation: str
    validation_images: int
    fp32_top1: float
    max_float_mac_share: float
    drop_pp: float
    float_layers: tuple[str, ...]
    float_mac_share: float
    attempts: tuple[BudgetAttempt, ...]
    extra: dict = extra_field()
    _keys: tuple[str, ...] = keys_field()

    def kept(self, attempt: BudgetAttempt, attempts) -> BudgetRecord:
        """This budget with ``attempt`` as the conversion kept, after ``attempts``."""
        return dataclasses.replace(
            self,
            method=attempt.method or self.method,
            drop_pp=attempt.drop_pp,
            float_layers=tuple(attempt.float_layers),
            float_mac_share=attempt.float_mac_share,
            attempts=tuple(attempts),
        )

    def to_dict(self) -> dict:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("extra", "_keys")}
        values.update(float_layers=list(self.float_layers), attempts=[a.to_dict() for a in self.attempts])
        return emit(self, values)

    @classmethod
    def from_dict(cls, d, where, key: str = "accuracy_budget") -> BudgetRecord:
        if not isinstance(d, dict):
            raise fail(where, key, "a table", d)
        for name in ("method", "validation"):
            if not isinstance(d.get(name), str):
                raise fail(where, f"{key}.{name}", "a string", d.get(name))
        if not is_whole(d.get("validation_images")) or d["validation_images"] < 1:
            raise fail(where, f"{key}.validation_images", "a positive integer", d.get("validation_images"))
        for name in _NUMBERS:
            if not is_finite_number(d.get(name)):
                raise fail(where, f"{key}.{name}", "a finite number", d.get(name))
        if not is_text_list(d.get("float_layers")):
            raise fail(where, f"{key}.float_layers", "a list of layer names", d.get("float_layers"))
        if not isinstance(d.get("attempts"), list):
            raise fail(where, f"{key}.attempts", "a list of attempts", d.get("attempts"))
        attempts = tuple(BudgetAttempt.from_dict(a, where, f"{key}.attempts[{i}]") for i, a in enumerate(d["attempts"]))
        names = [f.name for f in dataclasses.fields(cls) if f.name not in ("extra", "_keys")]
        extra, keys = split(d, names)
        given = {n: d[n] for n in names} | {"float_layers": tuple(d["float_layers"]), "attempts": attempts}
        return cls(**given, extra=extra, _keys=keys)
