"""The command line's parser: "did you mean" for mistyped commands and flags, and flags made from settings.

:class:`Parser` is the ``argparse.ArgumentParser`` of every ``mlport`` command (sub-commands inherit it):
an unknown sub-command, choice or flag is answered with the closest known ones.

:func:`add_settings_options` turns the fields of a pydantic settings class declared with
:func:`mlport.settings.option` into flags, so that a flag is declared once, on its settings field;
:func:`given_settings` reads back what the command line gave (``None``: not given, so the environment
or the config file decide).
"""

from __future__ import annotations

import argparse
import difflib
import itertools
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # pydantic and the settings load only for the commands with settings flags (start-up time)
    from pydantic import BaseModel
    from pydantic.fields import FieldInfo

__all__ = ["Parser", "add_settings_options", "given_settings", "suggest"]


def suggest(word: str, known: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` when ``word`` is close to one of ``known``, else ``""``."""
    bare = {k.lstrip("-"): k for k in known}  # the dashes every flag has would make all of them look alike
    close = difflib.get_close_matches(word.lstrip("-"), list(bare), n=2, cutoff=0.6)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(bare[c]) for c in close) + "?)"


class Parser(argparse.ArgumentParser):
    """``argparse`` with "did you mean" on unknown sub-commands, choices and flags."""

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        choices = action.choices
        if choices is None or value in choices:
            return
        names = [str(c) for c in choices]
        what = "command" if isinstance(action, argparse._SubParsersAction) else f"value for {_label(action)}"
        raise argparse.ArgumentError(
            None, f"unknown {what} {value!r}{suggest(str(value), names)}; choose from {', '.join(names)}"
        )

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        # No mlport command takes unknown options: each is named here, where the flags of the command typed
        # are known, with the closest of them, before its value can be taken for a positional argument.
        if args is None:
            args = sys.argv[1:]
        if args:
            if any(isinstance(a, argparse._SubParsersAction) for a in self._actions):
                self._check_options(list(itertools.takewhile(lambda a: a.startswith("-"), args)))  # before the command
            else:
                self._check_options(args)
        parsed, extras = super().parse_known_args(args, namespace)
        self._check_options(extras)
        return parsed, extras

    def _check_options(self, args: Sequence[str]) -> None:
        known = [s for action in self._actions for s in action.option_strings]
        for arg in args:
            if arg == "--":
                return
            flag = arg.split("=", 1)[0]
            if flag.startswith("--") and not any(k.startswith(flag) for k in known):  # prefixes are argparse's
                self.error(f"unknown option {flag}{suggest(flag, known)}")


def _label(action: argparse.Action) -> str:
    return action.option_strings[0] if action.option_strings else str(action.metavar or action.dest)


def _flag(name: str, info: FieldInfo) -> str | None:
    from mlport.settings import FLAG

    extra = info.json_schema_extra
    if not isinstance(extra, dict) or FLAG not in extra:
        return None
    given = extra[FLAG]
    return given if isinstance(given, str) and given != "auto" else "--" + name.replace("_", "-")


def _base(annotation: Any) -> Any:
    """``int`` from ``int | None``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def add_settings_options(parser: argparse.ArgumentParser, settings: type[BaseModel]) -> None:
    """One flag per field of ``settings`` declared with :func:`mlport.settings.option`, in their order."""
    for name, info in settings.model_fields.items():
        flag = _flag(name, info)
        if flag is None:
            continue
        kind = _base(info.annotation)
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        kw: dict[str, Any] = {"dest": name, "default": None, "help": info.description}
        if kind is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(kind) is Literal and all(type(c) is int for c in typing.get_args(kind)):
            kw["choices"] = list(typing.get_args(kind))
            kw["type"] = int
        elif typing.get_origin(kind) is Literal:
            kw["choices"] = [str(c) for c in typing.get_args(kind)]
            kw["type"] = str.lower
        elif kind in (int, float, Path):
            kw["type"] = kind
        if kind is not bool:
            kw["metavar"] = extra.get("metavar") or flag.lstrip("-").replace("-", "_").upper()
        parser.add_argument(flag, **kw)


def given_settings(args: argparse.Namespace, settings: type[BaseModel]) -> dict[str, Any]:
    """The values of ``settings``' flags as parsed (``None`` for those not given)."""
    return {name: getattr(args, name, None) for name, info in settings.model_fields.items() if _flag(name, info)}
