"""The reports of ``paper_protocol.py``: the protocol differences, results.json, results.md and config.json."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from _budget import Schedule

__all__ = ["ANCHORS", "METRICS", "differences", "write_outputs"]

#: published IoU / mAP (%) on VNC III -> Lucchi subset 1 (all 165 test sections)
ANCHORS = {
    "DA-ISC (MICCAI 2022)": {"IoU": 68.65, "mAP": 89.48},
    "MaskTwins (ICML 2025)": {"IoU": 75.0},
}
METRICS = ("mAP", "F1", "MCC", "IoU")


def differences(ctx: SimpleNamespace, data: SimpleNamespace, recipe: Any, schedule: Schedule) -> list[str]:
    """The ways this run differs from the published protocol, written out."""
    if ctx.tiny:
        return ["tiny synthetic smoke run: not the protocol's data; not comparable with the anchors"]
    tta = f"TTA {ctx.tta.value}" if ctx.tta is not None else "no TTA"
    pack = (data.pack or {}).get("target_train")
    packed = (
        f", every {pack['stride']}-th of {pack['of']} (packed for the device)" if pack and pack["stride"] > 1 else ""
    )
    return [
        f"iterations: {schedule.pretrain_iterations} source-only + {schedule.iterations} MaskTwins per seed "
        "(DA-ISC: 200k iterations on a GPU)",
        f"crops {recipe.crop[0]}x{recipe.crop[1]} px, batch {recipe.batch_size}, network mtbio '{recipe.network}'",
        f"test sections: {data.sections['test']} of the EPFL testing volume (published: all 165, per-section mean)",
        f"target training sections: {data.sections['target']} (EPFL training volume: 165){packed}",
        "input: 1 section (DA-ISC: 2 adjacent sections)",
        f"evaluation: {tta} (DA-ISC: flip TTA), {ctx.eval_roi} px windows",
        f"hardware: {ctx.device_name}; seeds: {ctx.seeds}",
        "VNC III 4.6 nm vs Lucchi 5 nm in-plane: trained as given (within run_training's 10 % tolerance)",
    ]


def write_outputs(out: Path, result: dict[str, Any], config: dict[str, Any]) -> None:
    """Write ``out/results.json``, ``out/config.json`` and ``out/results.md`` (each atomically)."""
    from _common import summarize

    from mtbio.provenance import write_json_atomic

    write_json_atomic(out / "results.json", result)
    write_json_atomic(out / "config.json", config)
    table = {
        _label(r, rows): [{k: v for k, v in row.items() if k in METRICS} for row in rows]
        for r, rows in result["rows"].items()
    }
    lines = [f"# Paper protocol: {result['protocol']}", "", f"Command: `{result['command']}`  "]
    timing = result["timing"]
    budget = f" of a {timing['budget_s']:.0f} s budget" if timing["budget_s"] else ""
    lines.append(
        f"Device: {result['device']['name']} (torch {result['device']['torch']}); selection: {result['selection']}; "
        f"wall clock {timing['total_s']:.0f} s{budget}"
    )
    lines += ["", summarize(table), "Published (VNC III -> Lucchi subset 1, 165 test sections):", ""]
    lines += ["| method | mAP (%) | IoU (%) |", "|---|---|---|"]
    for name, a in ANCHORS.items():
        lines.append(f"| {name} | {a.get('mAP', '-')} | {a['IoU']} |")
    lines += ["", "Differences from the published protocol:", ""] + [f"* {d}" for d in result["differences"]]
    s = result["schedule"]
    how = "sized to the budget" if s["sized"] else "fixed"
    lines += ["", f"Schedule: {s['pretrain_iterations']} + {s['iterations']} iterations per seed ({how})."]
    if not result["complete"]:
        lines += ["", "**Incomplete**: the job has not finished every seed (the rows hold the seeds done)."]
    tmp = out / ".results.md.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(out / "results.md")


def _label(row: str, rows: list[dict[str, Any]]) -> str:
    """The table's name of a row (the selected row says when it is the last weights for want of a selection)."""
    if row == "masktwins_selected" and any(r.get("selection", "").startswith("unavailable") for r in rows):
        return "masktwins_selected (selection unavailable: the last weights)"
    if row == "masktwins_selected" and any(r.get("selection", "").startswith("none") for r in rows):
        return "masktwins_selected (none selectable on some seed: the last weights there)"
    return row
