"""SIGINT / SIGTERM / SIGKILL during training: a stop at an iteration boundary with a checkpoint of the completed
iterations only, exit status 130 / 143, and a resumed run bitwise equal to an uninterrupted one (CPU)."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from mtbio.networks.weights import read_weights
from mtbio.uda.interrupt import SignalFlag, TrainingInterrupted
from mtbio.uda.trainer import attach_checkpointing, latest_checkpoint, load_checkpoint
from tests.uda.test_trainer import _trainer

REPO = Path(__file__).resolve().parents[2]


def _checkpoints(run: Path) -> dict[str, int]:
    return {f.name: int(re.search(r"=(\d+)\.pt$", f.name).group(1)) for f in run.glob("checkpoint_*.pt")}


def _state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _assert_same_trainers(a, b) -> None:
    """Bitwise: student, teacher (with num_updates), optimizer state."""
    for part in ("student", "teacher"):
        sa, sb = getattr(a, part).state_dict(), getattr(b, part).state_dict()
        assert sa.keys() == sb.keys()
        for k in sa:
            if torch.is_tensor(sa[k]):
                assert torch.equal(sa[k], sb[k]), (part, k)
            else:
                assert sa[k] == sb[k], (part, k)
    assert a.teacher.num_updates == b.teacher.num_updates
    oa, ob = a.optimizer.state_dict(), b.optimizer.state_dict()
    assert oa["param_groups"] == ob["param_groups"] and oa["state"].keys() == ob["state"].keys()
    for i in oa["state"]:
        for k, v in oa["state"][i].items():
            assert torch.equal(v, ob["state"][i][k]), (i, k)


def _kill_at(trainer, iteration: int, signum: int) -> None:
    """Send ``signum`` to this process from inside the batch of 1-based ``iteration`` (mid-iteration)."""
    source = trainer.source

    def sampler(i: int):
        if i == iteration - 1:
            os.kill(os.getpid(), signum)
        return source(i)

    trainer.source = sampler


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_mid_iteration_stops_at_its_end_and_resume_is_bitwise(tmp_path: Path, signum: int):
    full = _trainer(iters=6)
    full.fit()
    before = signal.getsignal(signum)
    first = _trainer(iters=6)
    attach_checkpointing(first, tmp_path, interval=2, n_saved=2)
    _kill_at(first, 3, signum)
    with pytest.raises(TrainingInterrupted) as stop:
        first.fit()
    assert stop.value.code == 128 + signum and stop.value.iteration == 3
    assert signal.getsignal(signum) is before  # the previous handler is back
    # the iteration during which the signal came completed; its checkpoint holds exactly 3 iterations
    assert _checkpoints(tmp_path) == {"checkpoint_iteration=2.pt": 2, "checkpoint_iteration=3.pt": 3}
    assert stop.value.checkpoint == tmp_path / "checkpoint_iteration=3.pt" == latest_checkpoint(tmp_path)
    saved = _state(stop.value.checkpoint)
    assert saved["trainer"]["iteration"] == 3 and saved["teacher"]["_extra_state"]["num_updates"] == 3
    assert not list(tmp_path.glob("tmp*"))  # no temporary file left by the atomic writes
    second = _trainer(iters=6)
    load_checkpoint(second, stop.value.checkpoint)
    assert second.fit().iteration == 6
    _assert_same_trainers(second, full)


def test_signal_without_checkpointing_still_stops_cleanly():
    t = _trainer(iters=4)
    _kill_at(t, 2, signal.SIGINT)
    with pytest.raises(TrainingInterrupted) as stop:
        t.fit()
    assert stop.value.code == 130 and stop.value.checkpoint is None and t.teacher.num_updates == 2


def test_signal_in_the_last_iteration_completes_the_run(tmp_path: Path):
    t = _trainer(iters=3)
    attach_checkpointing(t, tmp_path, interval=2)
    _kill_at(t, 3, signal.SIGTERM)
    assert t.fit().iteration == 3  # nothing left to lose: the run ends normally
    assert "checkpoint_final_iteration=3.pt" in _checkpoints(tmp_path)


def test_exception_mid_iteration_writes_no_checkpoint(tmp_path: Path):
    t = _trainer(iters=6)
    attach_checkpointing(t, tmp_path, interval=2, n_saved=None)
    source = t.source

    def failing(i: int):
        if i == 2:
            raise RuntimeError("read error")
        return source(i)

    t.source = failing
    with pytest.raises(RuntimeError, match="read error"):
        t.fit()
    assert _checkpoints(tmp_path) == {"checkpoint_iteration=2.pt": 2}  # no "final" checkpoint of iteration 3


def test_second_signal_aborts_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt), SignalFlag() as flag:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)  # the handler runs in the main thread between bytecodes
        assert flag.signum == signal.SIGINT
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)
    assert signal.getsignal(signal.SIGINT) is before


# --- the CLI in a subprocess -------------------------------------------------------------------------------------

ITERS = 10


def _data(tmp_path: Path) -> list[str]:
    rng = np.random.default_rng(0)
    lab = rng.random((3, 40, 40)) > 0.8
    img = (lab * 60 + rng.normal(100, 10, lab.shape)).clip(0, 255).astype(np.uint8)
    for name, arr in {"src": img, "lab": (lab * 255).astype(np.uint8), "tgt": 255 - img}.items():
        tifffile.imwrite(tmp_path / f"{name}.tif", arr)
    return ["--source", str(tmp_path / "src.tif"), "--source-label", str(tmp_path / "lab.tif"),
            "--target", str(tmp_path / "tgt.tif"), "--crop", "16", "--batch", "2", "--block-size", "4",
            "--iters", str(ITERS), "--save-every", "4", "--log-every", "1", "--threads", "2",
            "--network", "small_unet", "--pretrain", "0"]  # fmt: skip


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[list[str], dict[str, torch.Tensor]]:
    """The data's arguments and the weights of an uninterrupted run (in this process, 2 threads as the child)."""
    from mtbio.cli import main

    tmp = tmp_path_factory.mktemp("reference")
    args = _data(tmp)
    threads = torch.get_num_threads()
    try:
        assert main(["train", *args, "--out", str(tmp / "run")]) == 0
    finally:
        torch.set_num_threads(threads)
    return args, _weights(tmp / "run" / "final.pt")


def _weights(path: Path) -> dict[str, torch.Tensor]:
    record = read_weights(path)
    assert record.iteration == ITERS
    return {
        **{f"teacher.{k}": v for k, v in record.teacher.items()},
        **{f"student.{k}": v for k, v in record.student.items()},
    }


def _assert_bitwise(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _signal_when(cmd: list[str], ready: Callable[[list[str]], bool], signum: int) -> tuple[int, str]:
    """Run ``cmd``, send ``signum`` once ``ready(lines so far)``; (exit status, output)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "2"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + 300
    while not ready(lines) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    if proc.poll() is None:
        proc.send_signal(signum)
    rc = proc.wait(timeout=300)
    reader.join(timeout=10)
    return rc, "".join(lines)


def _logged(iteration: int) -> Callable[[list[str]], bool]:
    return lambda lines: any(f"Iter: {iteration}/{ITERS}" in line for line in list(lines))


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_cli_signal_stops_at_an_iteration_and_resume_is_bitwise(tmp_path: Path, reference, signum: int):
    from mtbio.cli import main

    args, expected = reference
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "mtbio", "train", *args, "--out", str(out)]
    rc, log = _signal_when(cmd, _logged(2), signum)
    assert rc == 128 + signum, log
    stopped = int(re.search(rf"stopped by {signal.Signals(signum).name} after iteration (\d+) of {ITERS}", log)[1])
    assert 2 <= stopped < ITERS
    assert not (out / "final.pt").exists() and not any("final" in f for f in _checkpoints(out))
    assert max(_checkpoints(out).values()) == stopped and f"checkpoint_iteration={stopped}.pt" in _checkpoints(out)
    saved = _state(out / f"checkpoint_iteration={stopped}.pt")
    assert saved["trainer"]["iteration"] == stopped == saved["teacher"]["_extra_state"]["num_updates"]
    resume = re.search(r"to resume: (.*)", log)[1]
    assert shlex.split(resume) == ["mtbio", "train", *args, "--out", str(out), "--resume"]
    threads = torch.get_num_threads()
    try:
        assert main(shlex.split(resume)[1:]) == 0
    finally:
        torch.set_num_threads(threads)
    _assert_bitwise(_weights(out / "final.pt"), expected)


@pytest.mark.slow
def test_cli_sigkill_resumes_from_the_last_periodic_checkpoint(tmp_path: Path, reference):
    args, expected = reference
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "mtbio", "train", *args, "--out", str(out)]
    rc, log = _signal_when(cmd, lambda _: (out / "checkpoint_iteration=4.pt").is_file(), signal.SIGKILL)
    assert rc == -signal.SIGKILL, log
    assert not (out / "final.pt").exists()
    assert latest_checkpoint(out).name in ("checkpoint_iteration=4.pt", "checkpoint_iteration=8.pt")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "2"}
    done = subprocess.run([*cmd, "--resume"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resuming from" in done.stdout
    _assert_bitwise(_weights(out / "final.pt"), expected)


def test_cli_resume_with_other_settings_is_refused(tmp_path: Path, capsys):
    from mtbio.cli import main

    args = _data(tmp_path)
    out = tmp_path / "run"
    t = _trainer(iters=2)  # any checkpoint: the settings are checked before it is read
    attach_checkpointing(t, out, interval=1)
    t.fit()
    from mtbio.provenance import write_json_atomic

    write_json_atomic(out / "config.json", {"recipe": {"iterations": ITERS, "lr": 0.001, "log_interval": 7}})
    changed = [a if a != str(ITERS) else "12" for a in args]
    assert main(["train", *changed, "--lr", "0.002", "--out", str(out), "--resume"]) == 1
    err = capsys.readouterr().err
    assert "recipe.iterations 10 -> 12" in err and "recipe.lr 0.001 -> 0.002" in err
    assert "log_interval" not in err  # logging may change on resume


@pytest.mark.slow
def test_bundle_training_sigint_then_same_command_resumes_bitwise(tmp_path: Path, monkeypatch, capsys):
    from tests.bundles._run import copy_bundle, run_workflow, tiny

    root = copy_bundle("masktwins_demo", tmp_path / "bundle")
    monkeypatch.chdir(tmp_path)  # a copy of the bundle, run from elsewhere
    threads = torch.get_num_threads()
    kw = dict(strategies=["masktwins"], iterations=8, checkpoint_interval=2)
    try:
        run_workflow(root, "train", "training", **tiny("masktwins_demo", tmp_path / "full", **kw))
        part = tmp_path / "part"
        run = part / "masktwins"

        def interrupt() -> None:  # SIGINT to this process once 2 iterations are on disk
            while not (run / "checkpoint_iteration=2.pt").is_file():
                time.sleep(0.005)
            os.kill(os.getpid(), signal.SIGINT)

        watcher = threading.Thread(target=interrupt, daemon=True)
        watcher.start()
        with pytest.raises(TrainingInterrupted) as stop:
            run_workflow(root, "train", "training", **tiny("masktwins_demo", part, **kw))
        watcher.join(timeout=10)
        assert stop.value.code == 130 and 2 <= stop.value.iteration < 8
        assert "to resume, run the same command again" in capsys.readouterr().err
        assert not (part / "models" / "masktwins.pt").exists() and not (part / "models" / "model.pt").exists()
        assert max(_checkpoints(run).values()) == stop.value.iteration
        assert not any("final" in f for f in _checkpoints(run))
        run_workflow(root, "train", "training", **tiny("masktwins_demo", part, **kw))
    finally:
        torch.set_num_threads(threads)
    a, b = (read_weights(p / "models" / "masktwins.pt") for p in (tmp_path / "full", part))
    assert a.iteration == b.iteration == 8
    for part_name in ("teacher", "student"):
        _assert_bitwise(getattr(a, part_name), getattr(b, part_name))
