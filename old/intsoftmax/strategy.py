"""Strategies are data: frozen, value-hashable dataclasses with a JSON form and a readable name.

Every strategy class registers under a ``family`` (``"exp"``, ``"accumulation"``,
``"granularity"``, ``"transform"``) and a ``kind`` (e.g. ``"poly_exp2"``). Its JSON form is
``{"kind": ..., **fields}``; its name is ``kind(field=value,...)`` built from
*all* fields, so two strategies with the same name are the same strategy.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, ClassVar

_REGISTRY: dict[str, dict[str, type]] = {}


def register(family: str, kind: str):
    """Class decorator: make ``cls`` a frozen dataclass strategy known as ``family/kind``."""

    def wrap(cls):
        cls = dataclasses.dataclass(frozen=True)(cls)
        cls.family, cls.kind = family, kind
        table = _REGISTRY.setdefault(family, {})
        if kind in table:
            raise ValueError(f"duplicate {family} strategy kind {kind!r}")
        table[kind] = cls
        return cls

    return wrap


class Strategy:
    """Base of all strategies. Subclasses validate their fields in ``_validate``."""

    family: ClassVar[str]
    kind: ClassVar[str]

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            expected = f.type if isinstance(f.type, type) else {"int": int, "bool": bool, "float": float}.get(f.type)
            if expected is int and (isinstance(value, bool) or not isinstance(value, int)):
                raise TypeError(f"{type(self).__name__}.{f.name} must be an int, got {value!r}")
            if expected is bool and not isinstance(value, bool):
                raise TypeError(f"{type(self).__name__}.{f.name} must be a bool, got {value!r}")
            if expected is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise TypeError(f"{type(self).__name__}.{f.name} must be a number, got {value!r}")
        self._validate()

    def _validate(self) -> None:  # pragma: no cover - default: nothing to check
        pass

    def _check(self, ok: bool, field: str, msg: str) -> None:
        if not ok:
            raise ValueError(f"{type(self).__name__}.{field}={getattr(self, field)!r}: {msg}")

    @property
    def name(self) -> str:
        args = ",".join(f"{f.name}={getattr(self, f.name)}" for f in dataclasses.fields(self))
        return f"{self.kind}({args})"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def __str__(self) -> str:
        return self.name


def from_dict(family: str, data: dict[str, Any]) -> Strategy:
    """Rebuild a strategy of ``family`` from its :meth:`Strategy.to_dict` form."""
    if not isinstance(data, dict) or "kind" not in data:
        raise ValueError(f"a {family} strategy needs a dict with a 'kind' key, got {data!r}")
    table = _REGISTRY.get(family, {})
    kind = data["kind"]
    if kind not in table:
        raise ValueError(f"unknown {family} strategy kind {kind!r}; available: {sorted(table)}")
    fields = {k: v for k, v in data.items() if k != "kind"}
    return table[kind](**fields)


def available(family: str | None = None) -> dict[str, list[str]] | list[str]:
    """Registered strategy kinds, for one family or for all families."""
    if family is not None:
        if family not in _REGISTRY:
            raise ValueError(f"unknown strategy family {family!r}; available: {sorted(_REGISTRY)}")
        return sorted(_REGISTRY[family])
    return {fam: sorted(table) for fam, table in sorted(_REGISTRY.items())}


def strategy_class(family: str, kind: str) -> type:
    return _REGISTRY[family][kind]


def strategy_classes(family: str) -> list[type]:
    """The registered classes of ``family``, in registration order."""
    return list(_REGISTRY.get(family, {}).values())


def unregister(family: str, kind: str) -> None:
    """Forget ``family/kind`` (a throwaway strategy defined in a test or a notebook)."""
    _REGISTRY.get(family, {}).pop(kind, None)
