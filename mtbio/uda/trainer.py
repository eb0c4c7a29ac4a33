"""A thin ignite/MONAI trainer around :func:`mtbio.uda.step.uda_step`.

One iteration: build batch ``i`` from the samplers (a pure function of ``(seed, i)``), compute the step under
autocast (CUDA), one ``backward``, one optimizer step (with a ``GradScaler`` on CUDA), one EMA update of the
teacher. Because every random draw of iteration ``i`` comes from generators seeded by ``(seed, i)``, a run
restored from a checkpoint (student, teacher, optimizer, scaler, scheduler, engine iteration) continues exactly
as the uninterrupted run would (bitwise on the CPU): the global torch generator (dropout) is also re-seeded from
``(seed, i)`` for the iteration and put back afterwards.

SIGINT / SIGTERM during :meth:`UDATrainer.fit` stop the run at the next iteration boundary: the checkpointing
attached with :func:`attach_checkpointing` writes ``checkpoint_iteration=N.pt`` of the ``N`` completed
iterations (atomically, never a "final" file), the previous signal handlers come back and ``fit`` raises
:class:`~mtbio.uda.interrupt.TrainingInterrupted` (a ``SystemExit`` with code 130 / 143). A checkpoint is never
written mid-iteration, and nothing is written when an exception ends the run.

The trainer is an :class:`ignite.engine.Engine`, so MONAI handlers attach as usual (``StatsHandler``,
``TensorBoardStatsHandler``, ``CheckpointSaver`` / ``CheckpointLoader``); ``engine.state.output`` is the step's
logs dict of detached 0-d tensors, moved to the host only by the handlers that print them.

Multi-process training (``distributed=True`` inside an initialised ``torch.distributed`` process group, e.g.
under ``torchrun``): every rank builds the same global batch ``i`` and keeps crops ``rank::world_size`` (the
sharding ``DistributedSampler`` does for a dataset), the student runs through ``DistributedDataParallel``
(gradients averaged over ranks), and the step generator is seeded by ``(seed, iteration, rank)`` so ranks draw
different masks. Attach ``attach_checkpointing`` on every rank (ignite writes on rank 0 only, and its set-up
is collective) and printing / TensorBoard handlers on rank 0 only.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from ignite.engine import Engine, Events, State

from mtbio.uda.config import UDAConfig, ema_alpha_for
from mtbio.uda.interrupt import SignalFlag, TrainingInterrupted
from mtbio.uda.step import uda_step
from mtbio.uda.strategy import strategy_spec
from mtbio.uda.teacher import EMATeacher

__all__ = [
    "RunCheckpoints",
    "TrainingInterrupted",
    "UDATrainer",
    "attach_checkpointing",
    "latest_checkpoint",
    "load_checkpoint",
    "step_seed",
]

STEP_STREAM = 2
GLOBAL_STREAM = 3
Sampler = Callable[[int], Mapping[str, torch.Tensor]]


def step_seed(seed: int, iteration: int, rank: int = 0) -> int:
    """Seed of the step generator (masks, augmentation) of ``iteration``: a function of ``(seed, iteration)``
    and, for ranks > 0 of a multi-process run, of ``rank`` (rank 0 draws what a single process draws)."""
    return _stream_seed(seed, STEP_STREAM, iteration, rank)


def _stream_seed(seed: int, stream: int, iteration: int, rank: int) -> int:
    key = [int(seed), int(stream), int(iteration)] + ([int(rank)] if rank else [])
    return int(np.random.SeedSequence(key).generate_state(1, dtype=np.uint64)[0])


class UDATrainer(Engine):
    """Mean-teacher UDA trainer for every strategy of :class:`~mtbio.uda.strategy.Strategy`.

    Args:
        student: the network, (B, 1, *spatial) -> (B, 2, *spatial) logits; moved to ``device``.
        config: the step configuration (strategy, tau, lambdas, masks, augmentation, alpha).
        max_iterations: total iterations.
        source: labelled source sampler ``i -> {"image", "label"}`` (e.g. :class:`~mtbio.data.sampling.CropSampler`);
            may be ``None`` for the oracle.
        target: target sampler ``i -> {"image"[, "label"]}``; ``None`` for source-only.
        optimizer: optimizer over ``student``'s parameters; default AdamW(lr, weight_decay=1e-4).
        lr: learning rate of the default optimizer.
        lr_scheduler: optional scheduler stepped once per iteration.
        seed: seed of the step generators (the samplers carry their own seeds).
        device: training device.
        amp: autocast + GradScaler (only on CUDA; ignored on the CPU).
        epoch_length: iterations per ignite epoch (checkpoint/log granularity); must divide ``max_iterations``;
            default ``max_iterations``.
        grad_clip: optional max gradient norm.
        distributed: multi-process data parallel training in the current ``torch.distributed`` process group
            (see the module docstring); the global batch size must be a multiple of the world size.
    """

    def __init__(
        self,
        *,
        student: nn.Module,
        config: UDAConfig,
        max_iterations: int,
        source: Sampler | None = None,
        target: Sampler | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        lr: float = 1e-3,
        lr_scheduler: Any = None,
        seed: int = 0,
        device: torch.device | str = "cpu",
        amp: bool = True,
        epoch_length: int | None = None,
        grad_clip: float | None = None,
        distributed: bool = False,
    ) -> None:
        super().__init__(self._iteration)
        if max_iterations < 1:
            raise ValueError(f"max_iterations must be >= 1, got {max_iterations}")
        epoch_length = max_iterations if epoch_length is None else int(epoch_length)
        if epoch_length < 1 or max_iterations % epoch_length:
            raise ValueError(f"epoch_length {epoch_length} must be >= 1 and divide max_iterations {max_iterations}")
        spec = strategy_spec(config.strategy)
        if spec.uses_source and source is None:
            raise ValueError(f"strategy {config.strategy.value!r} needs a source sampler")
        if spec.uses_target and target is None:
            raise ValueError(f"strategy {config.strategy.value!r} needs a target sampler")
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        self.device = torch.device(device)
        self.config = config
        self.max_iterations = int(max_iterations)
        self.epoch_length = epoch_length
        self.source = source
        self.target = target
        self.seed = int(seed)
        self.student = student.to(self.device)
        alpha = config.alpha if config.alpha is not None else ema_alpha_for(self.max_iterations)
        self.teacher = EMATeacher(self.student, alpha=alpha, ema_buffers=config.ema_buffers)
        self.optimizer = optimizer or torch.optim.AdamW(self.student.parameters(), lr=lr, weight_decay=1e-4)
        self.lr_scheduler = lr_scheduler
        self.amp = bool(amp) and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.grad_clip = grad_clip
        self._spec = spec
        self.checkpoints: RunCheckpoints | None = None  # set by attach_checkpointing
        self._signum: int | None = None
        self._interrupt_checkpoint: Path | None = None
        self.rank, self.world_size = 0, 1
        self._forward: nn.Module = self.student
        if distributed:
            import torch.distributed as dist

            if not (dist.is_available() and dist.is_initialized()):
                raise ValueError("distributed=True needs an initialised torch.distributed process group (torchrun)")
            self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
            for name, sampler in (("source", source), ("target", target)):
                batch = getattr(sampler, "batch_size", None)
                if batch is not None and batch % self.world_size:
                    raise ValueError(f"{name} batch size {batch} is not a multiple of the world size {self.world_size}")
            if self.world_size > 1:
                from torch.nn.parallel import DistributedDataParallel

                ids = [self.device.index] if self.device.type == "cuda" else None
                self._forward = DistributedDataParallel(self.student, device_ids=ids)

    def make_batch(self, iteration: int) -> dict[str, torch.Tensor]:
        """The batch of 0-based ``iteration`` on the training device."""
        batch: dict[str, torch.Tensor] = {}
        if self._spec.uses_source:
            for k, v in self.source(iteration).items():
                batch[f"source_{k}"] = v
        if self._spec.uses_target:
            for k, v in self.target(iteration).items():
                batch[f"target_{k}"] = v
        if self.world_size > 1:  # this rank's shard of the global batch
            batch = {k: v[self.rank :: self.world_size] for k, v in batch.items()}
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def _iteration(self, engine: Engine, _: Any) -> dict[str, torch.Tensor]:
        i = engine.state.iteration - 1  # ignite counts from 1 and increments before calling us
        devices = [self.device] if self.device.type == "cuda" else []
        # the global generator (dropout, anything not given `gen`) is a function of (seed, i) too, so a resumed
        # process draws what the uninterrupted one drew; fork_rng puts the caller's state back afterwards
        with torch.random.fork_rng(devices=devices):
            seed = _stream_seed(self.seed, GLOBAL_STREAM, i, self.rank)
            torch.default_generator.manual_seed(seed)
            if devices:
                with torch.cuda.device(self.device):
                    torch.cuda.manual_seed(seed)
            return self._step(i)

    def _step(self, i: int) -> dict[str, torch.Tensor]:
        batch = self.make_batch(i)
        gen = torch.Generator(device=self.device).manual_seed(step_seed(self.seed, i, self.rank))
        self.student.train()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=self.device.type, enabled=self.amp):
            out = uda_step(
                self._forward,
                self.teacher,
                batch,
                self.config,
                gen,
                target_weight=self.config.target_weight(i, self.max_iterations),
            )
        self.scaler.scale(out.loss).backward()
        if self.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.student.parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.teacher.update(self.student)
        if self.lr_scheduler is not None:
            self.lr_scheduler.step()
        return out.logs

    def fit(self, *, stop_on_signals: bool = True) -> State:
        """Run (or resume, after a ``CheckpointLoader`` attached) up to ``max_iterations``.

        Args:
            stop_on_signals: while running, SIGINT / SIGTERM stop the run after the current iteration (see the
                module docstring); the handlers found on entry are restored on return. Only in the main thread.

        Raises:
            TrainingInterrupted: stopped by a signal before ``max_iterations`` (after writing the checkpoint of
                the completed iterations when checkpointing is attached, and printing where it is).
        """
        flag = SignalFlag() if stop_on_signals else SignalFlag(())
        self._signum = self._interrupt_checkpoint = None
        self.add_event_handler(Events.ITERATION_COMPLETED, self._stop_if_signalled, flag)  # after every handler
        try:
            with flag:
                state = self.run(
                    data=None, max_epochs=self.max_iterations // self.epoch_length, epoch_length=self.epoch_length
                )
        finally:
            self.remove_event_handler(self._stop_if_signalled, Events.ITERATION_COMPLETED)
        if self._signum is not None:
            stop = TrainingInterrupted(self._signum, state.iteration, self.max_iterations, self._interrupt_checkpoint)
            if self.rank == 0:
                print(f"mtbio: {stop}", file=sys.stderr, flush=True)
            raise stop
        return state

    def _stop_if_signalled(self, engine: Engine, flag: SignalFlag) -> None:
        signum = flag.signum or 0
        if self.world_size > 1 and flag.signals:  # every rank stops after the same iteration
            import torch.distributed as dist

            seen = torch.tensor([signum], device=self.device)
            dist.all_reduce(seen, op=dist.ReduceOp.MAX)
            signum = int(seen.item())
        if not signum or engine.state.iteration >= self.max_iterations:
            return  # a signal during the last iteration: the run is complete, nothing is lost
        self._signum = signum
        if self.checkpoints is not None:
            self._interrupt_checkpoint = self.checkpoints.save(engine)
        engine.terminate(skip_completed=True)  # no COMPLETED: no final checkpoint, no end-of-run validation

    def checkpoint_objects(self) -> dict[str, Any]:
        """Everything a resumable checkpoint holds (a ``save_dict`` / ``load_dict`` for MONAI's handlers)."""
        objs: dict[str, Any] = {
            "student": self.student,
            "teacher": self.teacher,
            "optimizer": self.optimizer,
            "trainer": self,
        }
        if self.amp:
            objs["scaler"] = self.scaler
        if self.lr_scheduler is not None:
            objs["lr_scheduler"] = self.lr_scheduler
        return objs


class RunCheckpoints:
    """Resumable checkpoints of a :class:`UDATrainer` in ``run_dir`` (ignite ``Checkpoint`` objects).

    ``checkpoint_iteration=N.pt`` every ``interval`` iterations (the newest ``n_saved`` kept) and on demand
    (:meth:`save`, used when a signal stops the run); ``checkpoint_final_iteration=T.pt`` when the run completes
    all ``T`` iterations (a run ended early by ``terminate()`` gets a ``checkpoint_iteration=N.pt`` instead).
    Files are written atomically (a temporary file in ``run_dir``, then ``os.replace``): a killed process
    leaves either the previous files or the new one, never a truncated checkpoint. Nothing is written when an
    exception ends the run (the state may be mid-iteration). Written on rank 0 of a multi-process run.
    """

    def __init__(self, trainer: UDATrainer, run_dir: str | Path, interval: int, n_saved: int | None = 1) -> None:
        from ignite.handlers import Checkpoint, DiskSaver

        if interval < 1:
            raise ValueError(f"checkpoint interval must be >= 1, got {interval}")
        self.trainer = trainer
        self.run_dir = Path(run_dir)
        self.interval = int(interval)
        objs = trainer.checkpoint_objects()

        def disk() -> DiskSaver:
            return DiskSaver(str(self.run_dir), atomic=True, require_empty=False, create_dir=True)

        def iteration(engine: Engine) -> int:
            return int(engine.state.iteration)

        self._periodic = Checkpoint(objs, disk(), score_function=iteration, score_name="iteration", n_saved=n_saved)
        self._final = Checkpoint(objs, disk(), score_function=iteration, score_name="final_iteration", n_saved=1)
        self._saved_at: int | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.interval), self.save)
        engine.add_event_handler(Events.COMPLETED, self._completed)

    def save(self, engine: Engine) -> Path:
        """Write ``checkpoint_iteration=N.pt`` of the ``N`` completed iterations (once per ``N``); its path."""
        n = int(engine.state.iteration)
        if self._saved_at != n:
            self._periodic(engine)
            self._saved_at = n
        return self.run_dir / f"checkpoint_iteration={n}.pt"

    def _completed(self, engine: Engine) -> None:
        if engine.state.iteration >= self.trainer.max_iterations:
            self._final(engine)
        else:  # terminate() before the end (e.g. a time-boxed job): an ordinary resumable checkpoint
            self.save(engine)


def attach_checkpointing(
    trainer: UDATrainer, run_dir: str | Path, interval: int, n_saved: int | None = 1
) -> RunCheckpoints:
    """Attach :class:`RunCheckpoints`: ``RUN_DIR/checkpoint_iteration=N.pt`` every ``interval`` iterations and
    when a signal stops :meth:`UDATrainer.fit`, ``checkpoint_final_iteration=N.pt`` at the end; atomic writes.

    Returns:
        the handler (also ``trainer.checkpoints``).
    """
    saver = RunCheckpoints(trainer, run_dir, interval, n_saved)
    saver.attach(trainer)
    trainer.checkpoints = saver
    return saver


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint with the highest iteration in ``run_dir`` (``checkpoint_[final_]iteration=N.pt``, as written
    by :func:`attach_checkpointing`), or ``None``."""
    found = []
    for f in Path(run_dir).glob("checkpoint_*iteration=*.pt"):
        m = re.search(r"iteration=(\d+)\.pt$", f.name)
        if m:
            found.append((int(m.group(1)), "final" in f.name, f))
    return max(found)[2] if found else None


def load_checkpoint(trainer: UDATrainer, path: str | Path, *, resume: bool = True) -> Any:
    """Attach a MONAI ``CheckpointLoader`` for ``path`` (loaded when the trainer starts).

    Args:
        trainer: the trainer, built with the same configuration as the checkpointed run.
        path: the ``.pt`` file.
        resume: also restore the optimizer, scaler, scheduler and the iteration counter (else weights only).
    """
    from monai.handlers import CheckpointLoader

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    objs = trainer.checkpoint_objects()
    if not resume:
        objs = {k: objs[k] for k in ("student", "teacher")}
    loader = CheckpointLoader(load_path=str(path), load_dict=objs, map_location=trainer.device)
    loader.attach(trainer)
    return loader
