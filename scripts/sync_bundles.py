"""Write the shared pieces of ``configs/`` into every bundle of ``bundles/`` (the bundles must be self-contained).

MONAI resolves a ``%file#id`` include relative to the working directory, so a portable bundle cannot include
``configs/``; instead this script copies each fragment's body into the bundle's config files between two marker
lines, and regenerates ``configs/uda.yaml`` from :class:`mtbio.uda.config.UDAConfig`, ``configs/recipe.yaml`` from the
:data:`RECIPE_IDS` fields of :class:`mtbio.uda.recipe.Recipe` (and the ``tta`` / ``planes`` values
of ``configs/inference_shared.yaml`` from :data:`mtbio.inference.settings.TOOL_DEFAULTS`) first::

    # >>> generated from configs/uda.yaml by scripts/sync_bundles.py: edit there, not here
    ...
    # <<< end of configs/uda.yaml

A bundle may define one of a fragment's ids itself, outside the generated regions (``masktwins_em3d`` sets its
own ``block_size``): that id is left out of the bundle's generated region, so no YAML key appears twice.

Usage (from anywhere)::

    python scripts/sync_bundles.py            # rewrite configs/uda.yaml and the bundles' generated regions
    python scripts/sync_bundles.py --check    # exit 1 listing what is out of date, change nothing
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import re
import sys
import textwrap
import typing
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: the repository's mtbio, not another installed one
    sys.path.insert(0, str(REPO))

from mtbio.inference.settings import TOOL_DEFAULTS  # noqa: E402
from mtbio.uda.config import UDAConfig  # noqa: E402
from mtbio.uda.options import field_docs  # noqa: E402
from mtbio.uda.recipe import Recipe  # noqa: E402

#: the fragment generated from UDAConfig (one id per field, and the ``uda`` mapping)
UDA_FRAGMENT = "uda.yaml"
#: the fragment generated from the :data:`RECIPE_IDS` fields of Recipe (one id per field)
RECIPE_FRAGMENT = "recipe.yaml"
#: Recipe fields every bundle takes from Recipe's defaults (the bundles state iterations, crop_size, batch_size, lr,
#: seed, checkpoint_interval, log_interval and pretrain_iterations themselves; network is network_def)
RECIPE_IDS = ("score_crops", "score_crop_size", "context_sections")
#: a bundle's config file -> the fragments of ``configs/`` written into it, in this order
TARGETS: dict[str, tuple[str, ...]] = {
    "train.yaml": (UDA_FRAGMENT, RECIPE_FRAGMENT, "train_shared.yaml"),
    "inference.yaml": ("inference_shared.yaml",),
    "evaluate.yaml": ("evaluate_shared.yaml",),
    "adapt.yaml": ("adapt_shared.yaml",),
    "multi_gpu_train.yaml": ("multi_gpu_train_shared.yaml",),
}
#: config files a bundle may leave out (run ids it does not offer: ``adapt`` is in the em2d and em3d bundles)
OPTIONAL = ("adapt.yaml",)
#: UDAConfig fields the bundles do not expose (the workflow sets ``strategy`` per entry of ``strategies``)
NOT_IN_BUNDLES = ("strategy",)
#: the fragment whose top-level ids of :data:`TOOL_DEFAULT_IDS` are valued from :data:`TOOL_DEFAULTS`
INFERENCE_FRAGMENT = "inference_shared.yaml"
#: InferenceSettings fields that configs/inference_shared.yaml states with the tools' default
TOOL_DEFAULT_IDS = ("tta", "planes")
BEGIN = "# >>> generated from configs/{name} by scripts/sync_bundles.py: edit there, not here"
END = "# <<< end of configs/{name}"
WIDTH = 120

_KEY = re.compile(r"^([A-Za-z_][\w]*):")


def fragment_names() -> list[str]:
    """Every fragment file of ``configs/`` that some bundle config receives."""
    return sorted({name for names in TARGETS.values() for name in names})


# --- configs/uda.yaml from UDAConfig ---


def _plain(text: str) -> str:
    """A docstring line as plain text (Sphinx roles and double back-quotes removed, Python None as YAML null)."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"\1", " ".join(text.split())).replace("``", "")
    for python, yaml_word in (("None", "null"), ("False", "false"), ("True", "true")):
        text = re.sub(rf"\b{python}\b", yaml_word, text)
    return text


def _shown(value: Any) -> str:
    """A default as YAML writes it (enums as their value, tuples as lists)."""
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, tuple):
        value = list(value)
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _comment(text: str, tp: Any, default: Any) -> list[str]:
    """The comment lines of one id: the field's docstring line, its choices (enums) and default."""
    inner = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
    choices = ""
    if len(inner) == 1 and isinstance(inner[0], type) and issubclass(inner[0], enum.Enum):
        choices = f" One of: {', '.join(e.value for e in inner[0])}."
    full = f"{_plain(text)}{choices} Default: {_shown(default)}."
    return textwrap.wrap(full, WIDTH - 2, initial_indent="# ", subsequent_indent="# ", break_on_hyphens=False)


def _class_path(cls: type, home: type = UDAConfig) -> str:
    """``module.Class`` of ``cls`` as reachable from ``home``'s module (what the bundles import)."""
    module = sys.modules[home.__module__]
    if getattr(module, cls.__name__, None) is not cls:
        raise TypeError(f"{cls.__qualname__} is not an attribute of {module.__name__}: the bundles cannot reach it")
    return f"{module.__name__}.{cls.__name__}"


def uda_fragment(cls: type = UDAConfig) -> str:
    """The text of ``configs/uda.yaml``: one top-level id per field of ``cls`` but :data:`NOT_IN_BUNDLES` (a
    nested dataclass field ``augment`` gives ``augment_<sub>`` ids), each commented with the field's docstring
    line and valued ``"$<module>.<Class>.<field>"`` (the installed package's default), then the ``uda`` mapping
    ``field: "@field"`` that the training workflow passes to ``cls``."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    out = [
        f"# GENERATED by scripts/sync_bundles.py from {_class_path(cls)} (its fields, defaults and docstring): do not",
        "# edit; change the dataclass, then run `python scripts/sync_bundles.py`. Copied into every bundle's",
        "# configs/train.yaml. One id per field (overridable: --tau 0.9, --augment_brightness 0.1); a bundle that",
        f"# defines an id itself keeps its value. {', '.join(NOT_IN_BUNDLES)}: set by the workflow per strategy.",
        "",
        f"# --- UDA hyperparameters ({_class_path(cls)}; paper symbols); values read from the installed mtbio ---",
    ]
    mapping = [f"# keyword arguments of {_class_path(cls)} (the workflow adds {', '.join(NOT_IN_BUNDLES)})", "uda:"]
    for f in dataclasses.fields(cls):
        if f.name in NOT_IN_BUNDLES:
            continue
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            sub_docs = field_docs(tp)
            group = docs.get(f.name, f.name).rstrip(".")
            mapping.append(f"  {f.name}:")
            for sub in dataclasses.fields(tp):
                sub_hint = typing.get_type_hints(tp)[sub.name]
                out += _comment(f"{group}: {sub_docs.get(sub.name, '')}", sub_hint, sub.default)
                out.append(f'{f.name}_{sub.name}: "${_class_path(tp)}.{sub.name}"')
                mapping.append(f'    {sub.name}: "@{f.name}_{sub.name}"')
            continue
        if f.default is dataclasses.MISSING:
            raise TypeError(f"{cls.__name__}.{f.name} has no class-level default for the bundles to read")
        out += _comment(docs.get(f.name, ""), tp, f.default)
        out.append(f'{f.name}: "${_class_path(cls)}.{f.name}"')
        mapping.append(f'  {f.name}: "@{f.name}"')
    return "\n".join(out + mapping) + "\n"


def recipe_fragment(cls: type = Recipe, names: tuple[str, ...] = RECIPE_IDS) -> str:
    """The text of ``configs/recipe.yaml``: one top-level id per field of ``names``, commented with the field's
    docstring line and default and valued ``"$<module>.<Class>.<field>"`` (the installed package's default), as in
    :func:`uda_fragment`; the ``training`` / ``adapt`` run ids of ``configs/*_shared.yaml`` pass them on."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    path = _class_path(cls, cls)
    header = (
        f"GENERATED by scripts/sync_bundles.py from {path} (the fields {', '.join(names)}: defaults and docstrings): "
        "do not edit; change the dataclass, then run `python scripts/sync_bundles.py`. Copied into every bundle's "
        "configs/train.yaml (the training and adapt run ids pass them on); a bundle that defines an id itself keeps "
        "its value (masktwins_em3d: context_sections 0, 2D only)."
    )
    out = [
        *textwrap.wrap(header, WIDTH - 2, initial_indent="# ", subsequent_indent="# ", break_on_hyphens=False),
        "",
        f"# --- training settings ({path}); values read from the installed mtbio ---",
    ]
    for name in names:
        f = fields.get(name)
        if f is None or f.default is dataclasses.MISSING:
            raise TypeError(f"{cls.__name__}.{name} is no field with a class-level default for the bundles to read")
        out += _comment(docs.get(name, ""), hints[name], f.default)
        out.append(f'{name}: "${path}.{name}"')
    return "\n".join(out) + "\n"


def with_tool_defaults(text: str, name: str = INFERENCE_FRAGMENT) -> str:
    """``text`` (``configs/inference_shared.yaml``) with each top-level id of :data:`TOOL_DEFAULT_IDS` valued as
    :data:`mtbio.inference.settings.TOOL_DEFAULTS` (``tta: none``).

    Raises:
        ValueError: the fragment lacks one of the ids.
    """
    for field in TOOL_DEFAULT_IDS:
        line = re.compile(rf"^{field}:.*$", re.MULTILINE)
        if not line.search(text):
            raise ValueError(f"configs/{name}: no top-level id {field!r} (the tools' default of InferenceSettings)")
        text = line.sub(f"{field}: {_shown(getattr(TOOL_DEFAULTS, field))}", text)
    return text


# --- fragments and generated regions ---


def fragment_body(text: str, name: str) -> str:
    """A fragment file without its header (the leading comment lines up to the first blank line)."""
    lines = text.splitlines()
    end = next((i for i, line in enumerate(lines) if not line.strip()), None)
    if end is None or end == 0 or not all(line.startswith("#") for line in lines[:end]):
        raise ValueError(f"configs/{name}: must start with a comment header and a blank line")
    return "\n".join(lines[end + 1 :]).strip("\n") + "\n"


def entries(body: str) -> list[tuple[str | None, list[str]]]:
    """A YAML body split into ``(top-level id or None, lines)``: an id's entry holds the comment lines right above
    it and its indented continuation; blank lines and ``# ---`` section lines are entries of their own."""
    out: list[tuple[str | None, list[str]]] = []
    pending: list[str] = []
    for line in body.splitlines():
        key = _KEY.match(line)
        if key:
            out.append((key.group(1), [*pending, line]))
            pending = []
        elif line.startswith("#") and not line.startswith("# ---"):
            pending.append(line)
        elif line.strip() and not line.startswith("#") and out and out[-1][0] is not None and not pending:
            out[-1][1].append(line)  # continuation of the current id
        else:
            out.extend((None, [p]) for p in pending)
            pending = []
            out.append((None, [line]))
    out.extend((None, [p]) for p in pending)
    return out


def region_text(body: str, exclude: set[str]) -> str:
    """``body`` without the entries of the ids in ``exclude`` (and no doubled blank lines)."""
    lines: list[str] = []
    for key, chunk in entries(body):
        if key is not None and key in exclude:
            continue
        for line in chunk:
            if not line.strip() and (not lines or not lines[-1].strip()):
                continue
            lines.append(line)
    return "\n".join(lines).strip("\n") + "\n"


def regions(text: str) -> dict[str, str]:
    """``{fragment name: text between its markers}`` of a bundle config file.

    Raises:
        ValueError: a begin marker without its end marker.
    """
    out: dict[str, str] = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.fullmatch(re.escape(BEGIN).replace(re.escape("{name}"), r"(\S+)"), line)
        if not m:
            continue
        name = m.group(1)
        try:
            j = lines.index(END.format(name=name), i + 1)
        except ValueError:
            raise ValueError(f"{BEGIN.format(name=name)!r} without its end line {END.format(name=name)!r}") from None
        out[name] = "\n".join(lines[i + 1 : j]) + "\n"
    return out


def _without_regions(text: str) -> str:
    for name, inside in regions(text).items():
        text = text.replace(f"{BEGIN.format(name=name)}\n{inside}{END.format(name=name)}", "")
    return text


def own_ids(text: str) -> set[str]:
    """Top-level ids a bundle config defines outside its generated regions."""
    content = yaml.safe_load(_without_regions(text)) or {}
    return {str(k) for k in content} if isinstance(content, dict) else set()


def synced(text: str, bodies: dict[str, str], names: tuple[str, ...]) -> str:
    """A bundle config's text with the regions of ``names`` holding their fragment ``bodies`` (less the ids the
    file defines itself); a missing region is appended at the end."""
    exclude = own_ids(text)
    for name in names:
        begin, end = BEGIN.format(name=name), END.format(name=name)
        new = f"{begin}\n{region_text(bodies[name], exclude)}{end}"
        current = regions(text)
        if name in current:
            text = text.replace(f"{begin}\n{current[name]}{end}", new)
        else:
            text = text.rstrip("\n") + f"\n\n{new}\n"
    return text


def plan(repo: Path = REPO) -> dict[Path, str]:
    """What every generated file should hold now: ``configs/uda.yaml``, ``configs/recipe.yaml`` and each bundle
    config of :data:`TARGETS`."""
    configs = repo / "configs"
    wanted: dict[Path, str] = {configs / UDA_FRAGMENT: uda_fragment(), configs / RECIPE_FRAGMENT: recipe_fragment()}
    generated = (UDA_FRAGMENT, RECIPE_FRAGMENT)
    texts = {name: (configs / name).read_text() for name in fragment_names() if name not in generated}
    texts.update({name: wanted[configs / name] for name in generated})
    texts[INFERENCE_FRAGMENT] = wanted[configs / INFERENCE_FRAGMENT] = with_tool_defaults(texts[INFERENCE_FRAGMENT])
    bodies = {name: fragment_body(text, name) for name, text in texts.items()}
    for bundle in sorted(p for p in (repo / "bundles").iterdir() if (p / "configs").is_dir()):
        for file_name, names in TARGETS.items():
            path = bundle / "configs" / file_name
            if path.is_file():
                wanted[path] = synced(path.read_text(), bodies, names)
    return wanted


def stale(repo: Path = REPO) -> list[str]:
    """One line per out-of-date file or generated region (empty when everything is in sync)."""
    problems = []
    for path, text in plan(repo).items():
        current = path.read_text() if path.is_file() else ""
        if current == text:
            continue
        rel = path.relative_to(repo)
        if path.parent.name == "configs" and path.parent.parent == repo:
            source = "mtbio.uda.config.UDAConfig"
            if path.name == RECIPE_FRAGMENT:
                source = "mtbio.uda.recipe.Recipe"
            if path.name == INFERENCE_FRAGMENT:
                source = "mtbio.inference.settings.TOOL_DEFAULTS"
            problems.append(f"{rel}: out of date with {source}")
            continue
        old, new = regions(current), regions(text)
        names = [n for n in new if old.get(n) != new[n]] or ["(outside the regions)"]
        problems += [f"{rel}: region of configs/{n} {'out of date' if n in old else 'missing'}" for n in names]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 listing what is out of date")
    parser.add_argument("--repo", type=Path, default=REPO, help="repository root (default: this script's)")
    args = parser.parse_args(argv)
    if args.check:
        problems = stale(args.repo)
        for line in problems:
            print(line)
        if problems:
            print("run python scripts/sync_bundles.py")
        return 1 if problems else 0
    for path, text in plan(args.repo).items():
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
            print(f"wrote {path.relative_to(args.repo)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
