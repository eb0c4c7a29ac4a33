"""Command-line flags generated from a typed config dataclass (``UDAConfig`` first): one place per option.

Every field of the dataclass becomes ``--field-name`` (nested dataclasses such as ``StrongAugment`` become
``--augment-brightness`` ...), with the type, the choices (enums), the help text (the field's line of the class
docstring's ``Attributes:`` section) and the default shown in the help *read from the dataclass*. The parser's
default is "not given" (``argparse.SUPPRESS``), so :func:`config_from_args` passes only the flags the user set and the
dataclass supplies every other value: no entry point restates a default.

>>> import argparse
>>> p = argparse.ArgumentParser()
>>> add_config_arguments(p, UDAConfig)
>>> config_from_args(p.parse_args(["--tau", "0.9"]), UDAConfig).tau
0.9
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import inspect
import re
import types
import typing
from collections.abc import Mapping
from typing import Any

from mtbio.uda.config import UDAConfig

__all__ = ["ALIASES", "add_config_arguments", "config_fields", "config_from_args", "field_docs"]

#: earlier flag spellings kept working (field -> extra option strings)
ALIASES: dict[str, tuple[str, ...]] = {"rampup_iterations": ("--rampup",)}


def field_docs(cls: type) -> dict[str, str]:
    """``{field: text}`` from the ``Attributes:`` section of ``cls``'s Google-style docstring (continuation lines
    joined)."""
    doc = inspect.getdoc(cls) or ""
    out: dict[str, str] = {}
    section = doc.split("Attributes:", 1)[1] if "Attributes:" in doc else ""
    current = None
    for line in section.splitlines():
        m = re.match(r"^    (\w+): (.*)$", line)
        if m:
            current = m.group(1)
            out[current] = m.group(2).strip()
        elif current and line.startswith("        "):
            out[current] += " " + line.strip()
        elif line.strip() and not line.startswith(" "):
            break
    return out


def config_fields(cls: type = UDAConfig, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(dotted name, type, default)`` of every leaf field of ``cls`` (nested dataclasses flattened as
    ``augment.brightness``) that has a command-line form (a field with ``metadata={"cli": False}`` has none)."""
    hints = typing.get_type_hints(cls)
    out: list[tuple[str, Any, Any]] = []
    for f in dataclasses.fields(cls):
        if not f.metadata.get("cli", True):
            continue
        tp = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        if dataclasses.is_dataclass(tp):
            out.extend(config_fields(tp, f"{prefix}{f.name}."))
        else:
            out.append((f"{prefix}{f.name}", tp, default))
    return out


def _plain_doc(text: str) -> str:
    """A docstring line as plain help text (Sphinx roles and double back-quotes removed)."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"\1", " ".join(text.split()))
    return text.replace("``", "")


def _optional(tp: Any) -> tuple[Any, bool]:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]), True  # noqa: UP007
    return tp, False


def _ints(text: str) -> int | tuple[int, ...]:
    values = tuple(int(v) for v in text.replace(" ", "").split(","))
    return values[0] if len(values) == 1 else values


def _parser_for(tp: Any, optional: bool) -> tuple[Any, dict[str, Any]]:
    """(argparse ``type`` callable, extra kwargs) for a field type."""
    kwargs: dict[str, Any] = {}
    if inspect.isclass(tp) and issubclass(tp, enum.Enum):
        kwargs["choices"] = [e.value for e in tp]
        conv: Any = str
    elif tp is bool:
        return None, {"action": argparse.BooleanOptionalAction}
    elif tp in (int, float, str):
        conv = tp
    elif typing.get_origin(tp) in (typing.Union, types.UnionType):  # int | tuple[int, ...]: "32" or "4,16,16"
        conv = _ints
        kwargs["metavar"] = "N[,N,N]"
    else:
        raise TypeError(f"no command-line form for a field of type {tp!r}")
    if optional:
        inner = conv

        def conv(text: str, _inner: Any = inner) -> Any:  # noqa: F811 - "none" -> None
            return None if text.lower() in ("none", "null") else _inner(text)

        if "choices" in kwargs:
            kwargs["choices"] = [*kwargs["choices"], "none"]
    return conv, kwargs


def add_config_arguments(
    parser: argparse.ArgumentParser,
    cls: type = UDAConfig,
    *,
    title: str | None = None,
    prefix: str = "cfg",
    defaults: Any = None,
    exclude: tuple[str, ...] = (),
) -> None:
    """Add one flag per (leaf) field of ``cls`` to ``parser`` (in an argument group named ``title``).

    Args:
        parser: the parser.
        cls: the dataclass; extra spellings of its flags come from :data:`ALIASES` (``UDAConfig``) and the class's
            ``CLI_ALIASES`` (``{field: ("--old",)}``).
        title: the argument group's title.
        prefix: the flags' ``dest`` is ``"<prefix>.<field>"`` (read back by :func:`config_from_args`).
        defaults: an instance of ``cls`` whose values the help shows as the defaults (an entry point with its own
            recipe, e.g. ``mtbio demo``); ``None`` = the class's defaults. The parser's default stays "not given".
        exclude: fields that get no flag (the entry point sets them itself).
    """
    docs: dict[str, str] = {}
    for name, _tp, _ in config_fields(cls):
        owner = cls
        for part in name.split(".")[:-1]:
            owner = typing.get_type_hints(owner)[part]
        docs.setdefault(name, field_docs(owner).get(name.split(".")[-1], ""))
    group = parser.add_argument_group(title or f"{cls.__name__} (defaults are {cls.__name__}'s)")
    aliases = {**ALIASES, **getattr(cls, "CLI_ALIASES", {})} if cls is UDAConfig else getattr(cls, "CLI_ALIASES", {})
    for name, tp, default in config_fields(cls):
        if name in exclude or name.split(".")[0] in exclude:
            continue
        if defaults is not None:
            default = defaults
            for part in name.split("."):
                default = getattr(default, part)
        inner, optional = _optional(tp)
        conv, kwargs = _parser_for(inner, optional)
        flag = "--" + name.replace(".", "-").replace("_", "-")
        shown = default.value if isinstance(default, enum.Enum) else default
        help_text = f"{_plain_doc(docs[name])} (default: {shown})".replace("%", "%%")
        if conv is not None:
            kwargs["type"] = conv
            if "choices" not in kwargs:
                kwargs.setdefault("metavar", name.split(".")[-1].upper())
        group.add_argument(
            flag, *aliases.get(name, ()), dest=f"{prefix}.{name}", default=argparse.SUPPRESS, help=help_text, **kwargs
        )


def config_from_args(
    args: argparse.Namespace | Mapping[str, Any],
    cls: type = UDAConfig,
    *,
    prefix: str = "cfg",
    base: Any = None,
    **fixed: Any,
) -> Any:
    """The ``cls`` instance of the flags given (``fixed`` keyword values win, e.g. ``strategy=...``); fields not
    given keep ``base``'s values (an instance of ``cls``) or the class's defaults."""
    given = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    values: dict[str, Any] = {}
    head = prefix + "."
    for key, value in given.items():
        if not key.startswith(head):
            continue
        node = values
        *parents, leaf = key[len(head) :].split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    for key, value in fixed.items():
        values[key] = value
    hints = typing.get_type_hints(cls)
    for key, value in list(values.items()):
        if isinstance(value, dict) and dataclasses.is_dataclass(hints.get(key)):
            inner = getattr(base, key) if base is not None else None
            values[key] = dataclasses.replace(inner, **value) if inner is not None else hints[key](**value)
    return cls(**values) if base is None else dataclasses.replace(base, **values)
