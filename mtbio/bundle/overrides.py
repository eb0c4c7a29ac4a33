"""Reject unknown bundle override ids.

``python -m monai.bundle run training --iteratons 5`` would silently add a new, unused id ``iteratons`` to the
config (MONAI merges every unknown ``--key value`` pair into it) and train with the default ``iterations``. The
bundles' ``initialize`` calls :func:`check_command_line` first, which compares the command line's ``--key`` names
with :func:`valid_override_keys` (the one list: the top-level ids of the bundle's config files plus the argument
names of MONAI's ``run`` / ``ConfigWorkflow``) and raises naming the close matches.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = ["check_command_line", "check_override_keys", "command_line_overrides", "valid_override_keys"]

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
#: files in a bundle's configs folder that are not configs (their keys are no override ids)
NOT_CONFIGS = ("metadata.json",)


def _monai_run_keys() -> set[str]:
    """Argument names of ``monai.bundle.run`` and ``ConfigWorkflow`` (``--config_file``, ``--meta_file``, ...)."""
    from monai.bundle import ConfigWorkflow
    from monai.bundle.scripts import run

    names: set[str] = set()
    for func in (run, ConfigWorkflow.__init__):
        for name, param in inspect.signature(func).parameters.items():
            if param.kind not in (param.VAR_KEYWORD, param.VAR_POSITIONAL) and name != "self":
                names.add(name)
    return names


def valid_override_keys(config_dir: str | os.PathLike) -> frozenset[str]:
    """Every id a command line may override for the bundle whose configs are in ``config_dir``: the top-level ids
    of all its config files (train, inference, evaluate, multi-GPU: the same overrides go to every run id) plus
    MONAI's own run arguments.

    Raises:
        FileNotFoundError: ``config_dir`` holds no config file.
    """
    from monai.bundle import ConfigParser

    folder = Path(config_dir)
    files = sorted(
        p for p in folder.glob("*") if p.suffix in CONFIG_SUFFIXES and p.name not in NOT_CONFIGS and p.is_file()
    )
    if not files:
        raise FileNotFoundError(f"{folder}: no bundle config files ({', '.join(CONFIG_SUFFIXES)})")
    keys: set[str] = set()
    for path in files:
        content = ConfigParser.load_config_file(str(path))
        if isinstance(content, dict):
            keys.update(str(k) for k in content)
    return frozenset(keys | _monai_run_keys())


def check_override_keys(keys: Iterable[str], config_dir: str | os.PathLike) -> None:
    """Raise when an override id (``--key`` or ``--key#sub``; only the top-level part counts) is not one the bundle
    defines.

    Raises:
        ValueError: listing each unknown id with its close matches (difflib).
    """
    valid = valid_override_keys(config_dir)
    problems = []
    for key in keys:
        top = key.split("#", 1)[0]
        if top in valid:
            continue
        close = difflib.get_close_matches(top, sorted(valid), n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join('--' + c for c in close)}?)" if close else ""
        problems.append(f"--{key}{hint}")
    if problems:
        raise ValueError(
            f"unknown bundle override {'; '.join(problems)}: not an id of the configs in {config_dir} "
            "nor a monai.bundle run argument"
        )


def command_line_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]] | None:
    """``(override keys, config files)`` of a ``python -m monai.bundle run RUN_ID --key value ...`` command line
    (fire's ``--key value`` and ``--key=value`` forms, ``-`` read as ``_``), or ``None`` for any other command."""
    main = Path(argv[0]) if argv else Path()
    if len(argv) < 2 or argv[1] != "run" or (main.parent.parent.name, main.parent.name) != ("monai", "bundle"):
        return None
    keys: list[str] = []
    config_files: list[str] = []
    tokens = list(argv[2:])
    for i, token in enumerate(tokens):
        if not token.startswith("--") or token == "--":
            continue
        name, _, inline = token[2:].partition("=")
        name = name.replace("-", "_")
        keys.append(name)
        if name == "config_file":
            value = inline or (tokens[i + 1] if i + 1 < len(tokens) else "")
            parsed = ast.literal_eval(value) if value.startswith("[") else value
            config_files.extend(str(v) for v in ([parsed] if isinstance(parsed, str) else parsed))
    return keys, config_files


def check_command_line(argv: Sequence[str] | None = None) -> None:
    """Check the override ids of this process's ``monai.bundle run`` command line (``sys.argv``) against the bundle
    of its first ``--config_file``; does nothing for other commands (e.g. ``ConfigWorkflow`` built in Python).

    Raises:
        ValueError: an unknown override id (see :func:`check_override_keys`).
    """
    found = command_line_overrides(sys.argv if argv is None else argv)
    if found is None or not found[1]:
        return
    keys, config_files = found
    check_override_keys(keys, Path(config_files[0]).parent)
