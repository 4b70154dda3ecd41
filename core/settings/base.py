"""The machinery of the settings tree: typed sections built from plain JSON values, checked once.

A section is a dataclass deriving from `Section` whose fields are made with `setting` (a default and
a `help` text: docs/configuration.md is generated from them). `Section.from_dict(values, where)`
refuses an unknown key at any depth, naming the closest known keys (and the section that has the
key, when it was put in the wrong one), checks each value against the field's annotation, builds
nested sections from nested objects and then runs the section's own `__post_init__` checks; every
error names where the setting came from (`where`, e.g. "--config exp.json: training.augmentation").
`updated(overrides, where)` lays overrides over a section, nested sections merged key by key.
`to_dict()` gives the plain values back.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import typing
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

_NO_DEFAULT = dataclasses.MISSING


def setting(default: Any = _NO_DEFAULT, *, help: str, factory=None, documented: bool = True):
    """A section field: `default` (or `factory` for a list or dict) and what it means. Fields with
    `documented=False` are filled by the program, not by a person (left out of the docs)."""
    metadata = {"help": help, "documented": documented}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _described(key: str, known: Iterable[str], elsewhere: Optional[Mapping[str, str]]) -> str:
    known = sorted(known)
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    hint = f"closest known: {', '.join(close)}" if close else f"known: {', '.join(known)}"
    if elsewhere and key in elsewhere:
        hint = f"{key!r} is a setting of {elsewhere[key]}; {hint}"
    return f"unknown setting {key!r}; {hint}"


def refuse_unknown(values: Iterable[str], known: Iterable[str], where: str,
                   elsewhere: Optional[Mapping[str, str]] = None) -> None:
    """ValueError naming every key of `values` that is not in `known`, each with its closest known
    keys: a misspelt setting must not be dropped silently and run with the default."""
    known = set(known)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{where}: " + "; ".join(_described(k, known, elsewhere) for k in unknown))


def _join(where: str, name: str) -> str:
    """"--config f.json: training" + "epochs" -> "--config f.json: training.epochs"."""
    if ": " in where:
        return f"{where}.{name}"
    return f"{where}: {name}"


def _args(annotation) -> Tuple[Any, ...]:
    return typing.get_args(annotation)


def _is_section(annotation) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, Section)


def check_value(value: Any, annotation: Any, where: str,
                elsewhere: Optional[Mapping[str, str]] = None) -> Any:
    """`value` checked against a field's annotation (bool, int, float, str, List[X], Dict[str, X],
    Optional and Union of those, a Section, Any); a nested Section is built from its object. The
    checked value is returned (a number given for a float field stays as given)."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return value
    if origin is typing.Union:
        options = _args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return check_value(value, option, where, elsewhere)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(errors[-1] if len(errors) == 1 else f"{where}: {value!r} is none of "
                         f"{' | '.join(_type_name(o) for o in options)}")
    if _is_section(annotation):
        if isinstance(value, annotation):
            return value
        return annotation.from_dict(value, where, elsewhere)
    if origin in (list, typing.List, dict, typing.Dict):
        return _checked_container(value, annotation, where)
    ok = {bool: lambda v: isinstance(v, bool),
          int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          str: lambda v: isinstance(v, str)}.get(annotation)
    if ok is not None and not ok(value):
        raise ValueError(f"{where} must be {_type_name(annotation)}, got {value!r}")
    return value


def _bare(name: str) -> str:
    return name.removeprefix("an ").removeprefix("a ")


def _checked_container(value: Any, annotation: Any, where: str) -> Any:
    """A List[X] or Dict[str, X] value, each item checked."""
    if typing.get_origin(annotation) in (list, typing.List):
        if not isinstance(value, list):
            raise ValueError(f"{where} must be a list, got {value!r}")
        (item,) = _args(annotation) or (Any,)
        return [check_value(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be an object, got {value!r}")
    _, item = _args(annotation) or (str, Any)
    return {str(k): check_value(v, item, f"{where}[{k!r}]") for k, v in value.items()}


def _type_name(annotation) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
             type(None): "null"}
    if annotation in names:
        return names[annotation]
    origin = typing.get_origin(annotation)
    if origin is typing.Union:
        return " or ".join(_type_name(a) for a in _args(annotation))
    if origin in (list, typing.List):
        return f"a list of {_bare(_type_name((_args(annotation) or (Any,))[0]))}"
    if origin in (dict, typing.Dict):
        return f"an object of {_bare(_type_name((_args(annotation) or (str, Any))[1]))}"
    if _is_section(annotation):
        return f"an object ({annotation.__name__})"
    return "any JSON value"


class Section:
    """Base of every settings dataclass (see the module docstring)."""

    @classmethod
    def field_types(cls) -> Dict[str, Any]:
        hints = typing.get_type_hints(cls)
        return {f.name: hints[f.name] for f in dataclasses.fields(cls)}

    @classmethod
    def check_keys(cls, values: Mapping[str, Any], where: str,
                   elsewhere: Optional[Mapping[str, str]] = None) -> None:
        """Refuses unknown keys (a section may extend this, e.g. for removed settings)."""
        refuse_unknown(values, cls.field_types(), where, elsewhere)

    @classmethod
    def from_dict(cls, values: Any, where: str = "settings",
                  elsewhere: Optional[Mapping[str, str]] = None):
        if not isinstance(values, Mapping):
            raise ValueError(f"{where} must be an object of settings, got {values!r}")
        cls.check_keys(values, where, elsewhere)
        types = cls.field_types()
        checked = {name: check_value(value, types[name], _join(where, name), elsewhere)
                   for name, value in values.items()}
        return _built(cls, checked, where)

    def updated(self, overrides: Mapping[str, Any], where: str = "overrides",
                elsewhere: Optional[Mapping[str, str]] = None):
        """A copy with `overrides` laid over it: a nested section is merged key by key, any other
        value replaced whole; every value checked as in `from_dict`."""
        if not isinstance(overrides, Mapping):
            raise ValueError(f"{where} must be an object of settings, got {overrides!r}")
        self.check_keys(overrides, where, elsewhere)
        types = self.field_types()
        values = {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self)}
        for name, value in overrides.items():
            current = values[name]
            if isinstance(current, Section) and isinstance(value, Mapping):
                values[name] = current.updated(value, _join(where, name), elsewhere)
            else:
                values[name] = check_value(value, types[name], _join(where, name), elsewhere)
        return _built(type(self), values, where)

    def to_dict(self) -> Dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _plain(value):
    if isinstance(value, Section):
        return value.to_dict()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return copy.deepcopy(value)


def _built(cls, values: Dict[str, Any], where: str):
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from None


def documented_fields(cls) -> Iterable[Tuple[str, Any, Any, str]]:
    """(name, annotation, default, help) of the fields a person sets, in declaration order."""
    types = cls.field_types()
    for f in dataclasses.fields(cls):
        if not f.metadata.get("documented", True):
            continue
        default = (f.default_factory() if f.default_factory is not dataclasses.MISSING
                   else f.default)
        yield f.name, types[f.name], default, f.metadata.get("help", "")


def type_name(annotation) -> str:
    """How the docs name a field's type ("a number", "a list of integer", ...)."""
    return _type_name(annotation)
