"""Stop a training run at an iteration boundary on SIGINT / SIGTERM.

:class:`SignalFlag` replaces the SIGINT and SIGTERM handlers while it is active (main thread only) by one that
only records the signal; the trainer looks at the flag after each completed iteration, writes a checkpoint of the
completed iterations and stops (:meth:`mtbio.uda.trainer.UDATrainer.fit`), which then raises
:class:`TrainingInterrupted`. A second signal while the first is pending aborts at once with
``KeyboardInterrupt``, without writing anything (the last periodic checkpoint stays the newest).
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

__all__ = ["SIGNALS", "SignalFlag", "TrainingInterrupted"]

#: the signals that stop training at the next iteration boundary
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(SystemExit):
    """A run stopped by a signal after ``iteration`` completed iterations of ``max_iterations``.

    A :class:`SystemExit` whose ``code`` is ``128 + signum`` (130 for SIGINT, 143 for SIGTERM), so a script that
    does not catch it exits with the shell's code of that signal, without a traceback; ``except Exception`` does
    not swallow it.

    Attributes:
        signum: the signal number.
        iteration: completed iterations (the state the checkpoint holds).
        max_iterations: the run's total.
        checkpoint: the checkpoint of those iterations, or ``None`` when no checkpointing was attached.
        stage: the :func:`~mtbio.uda.run.run_training` stage that was stopped (``"pretrain"`` or the strategy's
            name), set by that stage; ``None`` outside it.
        seconds: wall-clock seconds of that stage's training in this call up to the stop (``None`` outside it).
    """

    def __init__(self, signum: int, iteration: int, max_iterations: int, checkpoint: Path | None) -> None:
        super().__init__(128 + int(signum))
        self.signum = int(signum)
        self.iteration = int(iteration)
        self.max_iterations = int(max_iterations)
        self.checkpoint = checkpoint
        self.stage: str | None = None
        self.seconds: float | None = None

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    def __str__(self) -> str:
        saved = f"; checkpoint {self.checkpoint}" if self.checkpoint is not None else "; no checkpoint was attached"
        return (
            f"training stopped by {self.signal_name} after iteration {self.iteration} of {self.max_iterations}" + saved
        )


class SignalFlag:
    """Context manager recording SIGINT / SIGTERM instead of acting on them.

    Outside the main thread (where Python cannot install signal handlers) it does nothing and ``signum`` stays
    ``None``. On exit the handlers found on entry are restored.

    Attributes:
        signum: the first signal received, or ``None``.
    """

    def __init__(self, signals: tuple[int, ...] = SIGNALS) -> None:
        self.signals = tuple(signals)
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> SignalFlag:
        self.signum = None
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                previous = signal.getsignal(s)
                if previous is None:  # installed outside Python: cannot be restored, leave it alone
                    continue
                self._previous[s] = previous
                signal.signal(s, self._handle)
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.restore()

    def restore(self) -> None:
        """Put back the handlers found on entry (idempotent)."""
        while self._previous:
            s, previous = self._previous.popitem()
            signal.signal(s, previous)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.signum is not None:  # second signal: abort now, nothing is written
            self.restore()
            os.write(2, f"\nmtbio: second {name}: aborting without a checkpoint of this iteration\n".encode())
            raise KeyboardInterrupt
        self.signum = signum
        # os.write, not print: a handler may run while the main thread is inside print()
        os.write(2, f"\nmtbio: {name} received: stopping after the current iteration (again to abort now)\n".encode())
