"""The collapse guard: the label-free score of every checkpoint of a training run, the checkpoint it selects and the
run-level collapse rule.

:class:`CollapseGuard` (an ignite / MONAI-style handler, ``attach(engine)``) scores the EMA teacher (the network
used for prediction) with :func:`mtbio.uda.selection.score_network` on one fixed crop sample of the unlabelled
target (:class:`TargetSample`, drawn once with seed 0: every checkpoint, stage and run of one target is scored on
the same crops) at every checkpoint interval and at the final iteration. :func:`mtbio.uda.run.run_training`
attaches it to every stage of a run with a ``target_image`` (also the source-only pre-training, and strategies that
do not train on the target: scoring only reads it) unless ``Recipe.score_crops == 0``. In the stage's run folder:

* ``scores.jsonl``: one JSON row per scored checkpoint (keys :data:`ROW_KEYS`: ``iteration``, ``score``,
  ``collapsed``, ``reasons``, ``foreground_fraction``, ``source_fraction``, ``flip_dice``, ``view_dice``,
  ``adjacent_dice``, ``seconds`` of scoring, ``stage``: ``"pretrain"`` or the strategy), read with
  :func:`read_scores`;
* ``selected.pt``: a weights record (:mod:`mtbio.networks.weights`, the metadata of the stage's final weights) of
  the teacher at the best non-collapsed checkpoint (:func:`select_row`), with ``extra["selection"]`` = its row;
  rewritten atomically whenever a new best appears; absent (with a warning) while every scored checkpoint is
  collapsed.

**Run-level rule.** A collapsed *checkpoint* (foreground all / none, or outside ``[f_src / 5, 5 f_src]``) is never
selected, but a *run* is flagged collapsed only when its **last** scored checkpoint is collapsed
(:func:`run_collapsed`): self-training dips below ``f_src / 5`` early and recovers (on Lucchi++ -> VNC III, 3 of 5
healthy runs at iteration 200, none flagged by this rule among the complete ones; the numbers are in
:mod:`mtbio.uda.selection`'s docstring).

**Resume.** A row is written right after the periodic checkpoint of its iteration (the last iteration's just before
the final checkpoint). When a stage resumes from iteration ``N``, the rows after ``N`` (a killed process's) are
dropped, a missing row at ``N`` is scored from the restored teacher, and ``selected.pt`` is brought back in line
with :func:`select_row` of the kept rows (from the restored teacher or a kept checkpoint). A finished stage that is
reused keeps its files.

Scores are logged on the run's logger (a collapsed checkpoint as a WARNING naming the iteration, the foreground
fraction against the source's and the reason) and, with TensorBoard installed, as ``score/*`` scalars in
``tb/score/`` (a TensorBoard run of its own beside the training log).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtbio.uda.selection import COLLAPSE_FACTOR, sample_crops, score_network

__all__ = [
    "ROW_KEYS",
    "SCORES_FILE",
    "SELECTED_FILE",
    "CollapseGuard",
    "TargetSample",
    "TargetTooSmall",
    "read_scores",
    "run_collapsed",
    "score_crop_size",
    "select_row",
]

SCORES_FILE = "scores.jsonl"
SELECTED_FILE = "selected.pt"
#: the keys of a ``scores.jsonl`` row
ROW_KEYS = (
    "iteration",
    "score",
    "collapsed",
    "reasons",
    "foreground_fraction",
    "source_fraction",
    "flip_dice",
    "view_dice",
    "adjacent_dice",
    "seconds",
    "stage",
)
#: seed of the score's crop sample and masks (fixed: scores of checkpoints, stages and runs compare)
SCORE_SEED = 0
#: the largest down-sampling step a clipped score crop is kept a multiple of
MAX_STEP = 32


def read_scores(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of ``run_dir/scores.jsonl``, sorted by iteration, one per iteration (the last written wins).

    Lines that are not a JSON object with an integer ``iteration`` (a line torn by a killed process) are skipped.

    Returns:
        the rows; ``[]`` when the file is absent.
    """
    path = Path(run_dir) / SCORES_FILE
    if not path.is_file():
        return []
    rows: dict[int, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("iteration"), int):
            rows[row["iteration"]] = row
    return [rows[i] for i in sorted(rows)]


def _score_key(row: Mapping[str, Any]) -> tuple[float, int]:
    score = float(row.get("score", float("nan")))
    return (-math.inf if math.isnan(score) else score, int(row["iteration"]))


def select_row(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The best non-collapsed row by ``score`` (ties: the later iteration); ``None`` when there is none."""
    healthy = [dict(r) for r in rows if not r.get("collapsed")]
    return max(healthy, key=_score_key) if healthy else None


def run_collapsed(rows: Iterable[Mapping[str, Any]]) -> bool:
    """The run-level guard: ``True`` when the run's last scored checkpoint (highest iteration) is collapsed
    (``False`` without rows). See the module docstring for why not any checkpoint."""
    rows = list(rows)
    return bool(rows) and bool(max(rows, key=lambda r: int(r["iteration"])).get("collapsed"))


class TargetTooSmall(ValueError):
    """The target is smaller than one down-sampling step of the network on an axis: it cannot be scored."""


def _step(train: int) -> int:
    """The largest power of two dividing ``train`` (the network's down-sampling it fits), at most :data:`MAX_STEP`."""
    step = 1
    while step < MAX_STEP and train % (2 * step) == 0:
        step *= 2
    return step


def score_crop_size(train_crop: Sequence[int], size: int, target_shape: Sequence[int]) -> tuple[int, ...]:
    """The score crop of a network trained on ``train_crop`` for a ``(Z, Y, X)`` target.

    2D (``train_crop`` = (H, W)): ``(size, size)``; 3D (D, H, W): the training crop. An axis larger than the
    target's is clipped to it, rounded down to a multiple of the training crop's down-sampling step (the largest
    power of two dividing the training crop's axis, at most 32).

    Raises:
        ValueError: ``target_shape`` is not (Z, Y, X), or ``train_crop`` is not 2D / 3D.
        TargetTooSmall: the target is smaller than that step on an axis the crop is clipped on.
    """
    train = tuple(int(c) for c in train_crop)
    shape = tuple(int(s) for s in target_shape)
    if len(shape) != 3:
        raise ValueError(f"the score target must be a (Z, Y, X) volume, got shape {shape}")
    if len(train) not in (2, 3):
        raise ValueError(f"training crop must be (H, W) or (D, H, W), got {train}")
    wanted = (int(size),) * 2 if len(train) == 2 else train
    out = []
    for want, dim, t in zip(wanted, shape[-len(train) :], train):
        if want <= dim:
            out.append(want)
            continue
        step = _step(t)
        if dim < step:
            raise TargetTooSmall(
                f"the target of shape {shape} has {dim} voxels on an axis where the network, trained on crops "
                f"{train}, needs multiples of {step}"
            )
        out.append(dim - dim % step)
    return tuple(out)


@dataclass
class TargetSample:
    """The fixed crop sample of a target that every checkpoint is scored on (:func:`sample_crops`, seed 0).

    Attributes:
        crop_size: the score crop (``(H, W)`` or ``(D, H, W)``).
        crops: float32 ``(N, 1 + 2k, *crop_size)`` z-scored crops (``k``: the network's context sections).
        neighbours: the crops' windows on the adjacent sections (2D), or ``None``.
        n_crops: ``N``.
    """

    crop_size: tuple[int, ...]
    crops: np.ndarray
    neighbours: np.ndarray | None
    n_crops: int

    @classmethod
    def draw(
        cls, target: Any, train_crop: Sequence[int], size: int, n_crops: int, context_sections: int = 0
    ) -> TargetSample:
        """Draw the sample of ``target`` ((Z, Y, X)) for a network trained on ``train_crop``
        (:func:`score_crop_size` with ``size``) with ``context_sections`` adjacent sections on each side as channels.

        Raises:
            ValueError: a constant (signal-free) target, naming the setting that turns scoring off.
            TargetTooSmall: see :func:`score_crop_size`.
        """
        crop = score_crop_size(train_crop, size, target.shape)
        try:
            crops, neighbours = sample_crops(
                target, crop, int(n_crops), SCORE_SEED, adjacent=True, context_sections=context_sections
            )
        except ValueError as err:
            raise ValueError(f"label-free scoring of the target: {err} (score_crops=0 turns scoring off)") from err
        return cls(crop, crops, neighbours, int(n_crops))


class CollapseGuard:
    """Score the EMA teacher at every checkpoint interval and the final iteration (see the module docstring).

    Args:
        sample: the target's :class:`TargetSample`.
        run_dir: the stage's run folder (``scores.jsonl``, ``selected.pt``).
        stage: ``"pretrain"`` or the strategy's name (the rows' ``stage``).
        iterations: the stage's total iterations.
        interval: score every ``interval`` iterations (the checkpoint interval).
        meta: the fields of ``selected.pt``'s weights record (as :func:`~mtbio.networks.weights.record_from_meta`
            reads them; the stage's final weights' metadata).
        source_fraction: the source labels' foreground fraction (the collapse rule's reference; ``None``: unknown).
        block_size: mask block size of the score's complementary views.
        logger: name of the logger of the scores.
        tensorboard: also write ``score/*`` scalars to ``run_dir/tb/score`` (when TensorBoard is installed).

    Raises:
        ValueError: ``iterations`` or ``interval`` below 1.
    """

    def __init__(
        self,
        sample: TargetSample,
        *,
        run_dir: str | os.PathLike,
        stage: str,
        iterations: int,
        interval: int,
        meta: Mapping[str, Any] | None = None,
        source_fraction: float | None = None,
        block_size: int | Sequence[int] = 32,
        logger: str = "mtbio.train",
        tensorboard: bool = True,
    ) -> None:
        if iterations < 1 or interval < 1:
            raise ValueError(f"iterations and interval must be >= 1, got {iterations}, {interval}")
        self.sample = sample
        self.run_dir = Path(run_dir)
        self.stage = str(stage)
        self.iterations = int(iterations)
        self.interval = int(interval)
        self.meta = dict(meta or {})
        self.source_fraction = None if source_fraction is None else float(source_fraction)
        self.block_size = block_size
        self.log = logging.getLogger(logger)
        self.tensorboard = bool(tensorboard)
        self._rows: dict[int, dict[str, Any]] = {r["iteration"]: r for r in read_scores(self.run_dir)}
        self._writer: Any = None

    # ------------------------------------------------------------------------------------------ the rows

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The stage's rows so far, sorted by iteration."""
        return [self._rows[i] for i in sorted(self._rows)]

    @property
    def scores_path(self) -> Path:
        return self.run_dir / SCORES_FILE

    @property
    def selected_path(self) -> Path:
        return self.run_dir / SELECTED_FILE

    def due(self, iteration: int) -> bool:
        """Whether ``iteration`` is scored (a multiple of the interval, or the last one)."""
        return iteration > 0 and (iteration % self.interval == 0 or iteration == self.iterations)

    # ---------------------------------------------------------------------------------------- the engine

    def attach(self, engine: Any) -> None:
        """Attach to a :class:`~mtbio.uda.trainer.UDATrainer` *after* its checkpointing and checkpoint loader (so a
        row follows its checkpoint, and a resume sees the restored iteration)."""
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.ITERATION_COMPLETED(event_filter=lambda _, i: self.due(i)), self)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def started(self, engine: Any) -> None:
        """Continue the history from the engine's (restored) iteration ``N``: drop rows after ``N``, score a missing
        row at ``N``, bring ``selected.pt`` in line."""
        start = int(engine.state.iteration)
        self.truncate(start)
        self._sync_selected(engine.teacher.module, start)
        if self.due(start) and start not in self._rows:
            self.score(engine.teacher.module, start, device=engine.device)

    def __call__(self, engine: Any) -> None:
        it = int(engine.state.iteration)
        if it not in self._rows:
            self.score(engine.teacher.module, it, device=engine.device)

    def completed(self, engine: Any) -> None:
        """Score the final iteration if it is not yet, and log the stage's verdict."""
        it = int(engine.state.iteration)
        if it >= self.iterations:
            if it not in self._rows:
                self.score(engine.teacher.module, it, device=engine.device)
            self.summarise()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # -------------------------------------------------------------------------------------- the scoring

    def score(self, network: torch.nn.Module, iteration: int, *, device: torch.device | str = "cpu") -> dict[str, Any]:
        """Score ``network`` as the checkpoint of ``iteration``: write its row, log it, and write ``selected.pt``
        when it is the new best.

        Returns:
            the row.
        """
        t0 = time.perf_counter()
        result = score_network(
            network,
            None,
            crop_size=self.sample.crop_size,
            n_crops=self.sample.n_crops,
            seed=SCORE_SEED,
            block_size=self.block_size,
            source_fraction=self.source_fraction,
            device=device,
            sample=(self.sample.crops, self.sample.neighbours),
        )
        row = {
            "iteration": int(iteration),
            "score": float(result.score),
            "collapsed": bool(result.collapsed),
            "reasons": list(result.reasons),
            "foreground_fraction": float(result.foreground_fraction),
            "source_fraction": result.source_fraction,
            "flip_dice": float(result.flip_dice),
            "view_dice": float(result.view_dice),
            "adjacent_dice": result.adjacent_dice,
            "seconds": time.perf_counter() - t0,
            "stage": self.stage,
        }
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with self.scores_path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        self._rows[row["iteration"]] = row
        self._log(row)
        best = select_row(self.rows)
        if best is not None and best["iteration"] == row["iteration"]:
            self._write_selected(network.state_dict(), row)
        return row

    def truncate(self, iteration: int) -> None:
        """Drop the rows after ``iteration`` (rewriting ``scores.jsonl`` atomically when it changes)."""
        kept = {i: r for i, r in self._rows.items() if i <= iteration}
        on_disk = self.scores_path.is_file()
        if kept.keys() == self._rows.keys() and (not on_disk or _lines(self.scores_path) == len(kept)):
            return
        dropped = sorted(set(self._rows) - set(kept))
        if dropped:
            self.log.info(f"{self.stage}: resuming at iteration {iteration}: dropping the scores of {dropped}")
        self._rows = kept
        if not kept:
            self.scores_path.unlink(missing_ok=True)
            return
        tmp = self.scores_path.with_name(f".{SCORES_FILE}.{os.getpid()}.tmp")
        try:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in self.rows))
            os.replace(tmp, self.scores_path)
        finally:
            tmp.unlink(missing_ok=True)

    def summarise(self) -> None:
        """Log the stage's verdict: the selected checkpoint, or why there is none; the run-level flag."""
        rows = self.rows
        if not rows:
            return
        best = select_row(rows)
        if run_collapsed(rows):
            last = rows[-1]
            where = (
                f"{SELECTED_FILE} holds iteration {best['iteration']} (score {best['score']:.3f})"
                if best is not None
                else f"every scored checkpoint collapsed: no {SELECTED_FILE}"
            )
            self.log.warning(
                f"{self.stage}: the run collapsed: its last checkpoint (iteration {last['iteration']}) predicts "
                f"{_fractions(last)}; its final weights are that collapsed model; {where}"
            )
        elif best is not None:
            self.log.info(
                f"{self.stage}: label-free selection: iteration {best['iteration']} (score {best['score']:.3f}) -> "
                f"{self.selected_path}"
            )

    # ------------------------------------------------------------------------------------------ helpers

    def _write_selected(self, state: Mapping[str, torch.Tensor], row: Mapping[str, Any]) -> None:
        from mtbio.networks.weights import record_from_meta, write_weights

        teacher = {k: v.detach().cpu().clone() for k, v in state.items()}
        meta = {**self.meta, "selection": dict(row)}
        write_weights(record_from_meta(teacher, None, int(row["iteration"]), meta), self.selected_path)

    def _sync_selected(self, network: torch.nn.Module, start: int) -> None:
        """Make ``selected.pt`` hold :func:`select_row` of the kept rows (from ``network`` at ``start`` or a kept
        checkpoint), or remove it."""
        from mtbio.networks.weights import WeightsError, read_weights

        best = select_row(self.rows)
        path = self.selected_path
        if best is None:
            if path.is_file():
                path.unlink()
            return
        held = None
        if path.is_file():
            try:
                held = read_weights(path).extra.get("selection")
            except (WeightsError, OSError):
                held = None
        if isinstance(held, dict) and _same(held, best):
            return
        it = int(best["iteration"])
        if it == start:
            self._write_selected(network.state_dict(), best)
            return
        for name in (f"checkpoint_iteration={it}.pt", f"checkpoint_final_iteration={it}.pt"):
            checkpoint = self.run_dir / name
            if checkpoint.is_file():
                self._write_selected(read_weights(checkpoint).teacher, best)
                return
        path.unlink(missing_ok=True)
        self.log.warning(
            f"{self.stage}: {SELECTED_FILE} does not hold the best scored checkpoint (iteration {it}) and its weights "
            f"are gone; {SELECTED_FILE} is written again when a later checkpoint scores best"
        )

    def _log(self, row: Mapping[str, Any]) -> None:
        it = row["iteration"]
        adjacent = "-" if row["adjacent_dice"] is None else f"{row['adjacent_dice']:.3f}"
        self.log.info(
            f"{self.stage} iteration {it}: label-free score {row['score']:.3f} (flip {row['flip_dice']:.3f}, view "
            f"{row['view_dice']:.3f}, adjacent {adjacent}; {_fractions(row)}; {row['seconds']:.1f} s)"
        )
        if row["collapsed"]:
            self.log.warning(
                f"{self.stage}: target predictions collapsed at iteration {it}: {_fractions(row)} ({_why(row)}); "
                "this checkpoint is never selected"
            )
        self._scalars(row)

    def _scalars(self, row: Mapping[str, Any]) -> None:
        if not self.tensorboard:
            return
        if self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                self.tensorboard = False
                return
            # its own run beside the training writer's (one event file per writer): tb/score
            self._writer = SummaryWriter(log_dir=str(self.run_dir / "tb" / "score"))
        it = int(row["iteration"])
        for key in ("score", "foreground_fraction", "flip_dice", "view_dice", "adjacent_dice"):
            if row[key] is not None:
                self._writer.add_scalar(f"score/{key}", float(row[key]), it)
        self._writer.add_scalar("score/collapsed", float(row["collapsed"]), it)
        self._writer.flush()


def _same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return int(a.get("iteration", -1)) == int(b["iteration"]) and a.get("score") == b.get("score")


def _lines(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip())


def _pct(f: float) -> str:
    return f"{100 * f:.1f} %" if f >= 0.001 or f == 0 else f"{100 * f:.2f} %"


def _fractions(row: Mapping[str, Any]) -> str:
    text = f"foreground {_pct(float(row['foreground_fraction']))}"
    if row.get("source_fraction") is not None:
        text += f" vs source {_pct(float(row['source_fraction']))}"
    return text


def _why(row: Mapping[str, Any]) -> str:
    f, src = float(row["foreground_fraction"]), row.get("source_fraction")
    if f <= 0:
        return "all background"
    if f >= 1:
        return "all foreground"
    if src:
        return f"below 1/{COLLAPSE_FACTOR:g}" if f < float(src) else f"above {COLLAPSE_FACTOR:g}x"
    return "; ".join(row.get("reasons") or [])
