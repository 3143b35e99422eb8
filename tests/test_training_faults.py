"""Training under faults: multi-process launches, stop signals, resume checks, broken shards.

Everything runs on CPU with tiny random models; the multi-process tests start real
``accelerate launch`` process groups (gloo) and the signal tests real signals.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sharpit.errors import CheckpointError, CorruptFileError
from sharpit.testing.refine import save_tiny_zero123plus_repo
from training.checkpoint import list_checkpoints, prune_checkpoints
from training.config import TrainConfig
from training.data import EpochBatchSampler, PairDataset, reshape_position
from training.shards import ShardWriter, read_index
from training.train_sharpit import (EXIT_STOPPED, LaunchError, TrainingStopped, _check_gpus, _command, _resume_args,
                                    main, train)

REPO = Path(__file__).resolve().parents[1]
TILE = 32
NUM_PAIRS = 8
ACCELERATE = str(Path(sys.executable).with_name("accelerate"))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A tiny Zero123++ repo and 8 pairs of random grids in 4 shards."""
    root = tmp_path_factory.mktemp("faults")
    save_tiny_zero123plus_repo(root / "zero123plus")
    _write_pairs(root / "pairs")
    return root


def _write_pairs(folder: Path, count: int = NUM_PAIRS) -> Path:
    gen = torch.Generator().manual_seed(0)
    writer = ShardWriter(folder, samples_per_shard=2)
    for i in range(count):
        target, coarse = (torch.rand(3, 3 * TILE, 2 * TILE, generator=gen) for _ in range(2))
        writer.add(f"obj{i}", f"caption {i}", target, coarse, TILE)
    writer.close()
    return folder


def _flags(workdir, out, **kw):
    values = dict(pretrained_model=workdir / "zero123plus", train_data=workdir / "pairs", output_dir=out,
                  max_train_steps=4, train_batch_size=1, checkpointing_steps=3, validation_steps=1000,
                  num_validation_samples=0, dataloader_num_workers=0, learning_rate=1e-3, lr_warmup_steps=1,
                  seed=5, report_to="none")
    values.update(kw)
    args = []
    for key, value in values.items():
        if isinstance(value, bool):
            args.append(f"--{key}" if value else f"--no-{key}")
        else:
            args += [f"--{key}", str(value)]
    return args


def _config(workdir, out, **kw):
    values = dict(pretrained_model=str(workdir / "zero123plus"), train_data=str(workdir / "pairs"),
                  output_dir=str(out), max_train_steps=4, train_batch_size=1, checkpointing_steps=3,
                  validation_steps=1000, num_validation_samples=0, dataloader_num_workers=0, learning_rate=1e-3,
                  lr_warmup_steps=1, seed=5, report_to="none")
    values.update(kw)
    return TrainConfig(**values).validate()


def _hidden(folder: Path):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "LOCAL_WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
                        "ACCELERATE_USE_CPU")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="",
               TOKENIZERS_PARALLELISM="false", HF_HOME=str(tmp_path / "hf-home"),  # no user accelerate config
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(extra)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- item 1: launches ------------------------------------------------------------------------------

_DRIVER = r'''
import json, os, signal, sys
import diffusers
from accelerate import Accelerator
from training import train_sharpit

rank = int(os.environ.get("RANK", "0"))
record = {"rank": rank, "steps": {}, "saves": []}
for cls in (diffusers.ModelMixin, diffusers.DiffusionPipeline):
    def spy(self, path, *args, _orig=cls.save_pretrained, **kwargs):
        record["saves"].append(str(path))
        return _orig(self, path, *args, **kwargs)
    cls.save_pretrained = spy
if os.environ.get("TEST_FAIL_SAVE_RANK") == str(rank):
    def broken(self, *args, **kwargs):
        raise OSError(28, "No space left on device")
    Accelerator.save_state = broken
real_train = train_sharpit.train

def callback(step, logs):
    record["steps"][step] = {"loss": logs["loss"], "ids": logs["object_ids"]}
    if rank == 1 and step == int(os.environ.get("TEST_SIGNAL_AT", "0")):
        os.kill(os.getpid(), signal.SIGUSR1)   # only this process gets the signal

def train(config, step_callback=None, argv=None):
    return real_train(config, step_callback=callback, argv=argv)

train_sharpit.train = train
record["code"] = train_sharpit.main(sys.argv[1:])
with open(os.path.join(os.environ["TEST_RECORDS"], f"{os.environ['TEST_RUN']}-r{rank}.json"), "w") as f:
    json.dump(record, f)
sys.exit(record["code"])
'''


def _launch(tmp_path, script_args, run, cpu=True, **env):
    records = tmp_path / "records"
    records.mkdir(exist_ok=True)
    driver = tmp_path / "driver.py"
    driver.write_text(_DRIVER)
    extra = dict(TEST_RECORDS=str(records), TEST_RUN=run, **env)
    if cpu:
        extra["ACCELERATE_USE_CPU"] = "1"
    cmd = [ACCELERATE, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port())]
    result = subprocess.run(cmd + script_args, env=_env(tmp_path, **extra), capture_output=True, text=True,
                            timeout=240, cwd=REPO)
    found = {int(p.stem.rsplit("-r", 1)[1]): json.loads(p.read_text()) for p in records.glob(f"{run}-r*.json")}
    return result, found


def test_two_cpu_processes_train_together_stop_on_one_signal_and_resume(workdir, tmp_path):
    """ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2: one gloo group. Ranks see
    disjoint samples, agree on the loss, stop together when one of them gets SIGUSR1, and only
    rank 0 writes models; the resumed group goes on with the unseen samples of the epoch."""
    out = tmp_path / "out"
    first, records = _launch(tmp_path, [str(tmp_path / "driver.py")] + _flags(workdir, out), "first", TEST_SIGNAL_AT="1")
    assert sorted(records) == [0, 1], first.stderr[-3000:]
    assert records[0]["code"] == records[1]["code"] == EXIT_STOPPED, first.stderr[-3000:]
    # the signal reached rank 1 after step 1; both ranks stopped together after step 2 and saved it
    stopped = [line for line in first.stderr.splitlines() if line.startswith("train_sharpit: stopped")]
    assert len(stopped) == 1, first.stderr[-3000:]  # printed once, by rank 0
    assert "after step 2" in stopped[0] and str(out / "checkpoint-2") in stopped[0]
    assert "a stop signal to another process" in stopped[0]
    assert ("resume with: ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m "
            "training.train_sharpit") in stopped[0] and stopped[0].endswith("--resume_from_checkpoint latest")
    ckpt = out / "checkpoint-2"
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-2"] and not _hidden(out)
    assert {"random_states_0.pkl", "random_states_1.pkl", "optimizer.bin", "lr_scheduler.pt"} <= {
        p.name for p in ckpt.iterdir()}
    assert (ckpt / "unet" / "diffusion_pytorch_model.safetensors").is_file() and not (ckpt / "model.safetensors").exists()
    state = json.loads((ckpt / "training_state.json").read_text())
    assert (state["num_processes"], state["batches_consumed"], state["samples_seen"]) == (2, 2, 4)

    second, resumed = _launch(tmp_path, [str(tmp_path / "driver.py")]
                              + _flags(workdir, out, resume_from_checkpoint="latest"), "second")
    assert resumed[0]["code"] == resumed[1]["code"] == 0, second.stderr[-3000:]
    assert (out / "pipeline" / "model_index.json").is_file()
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-2", "checkpoint-3"]

    steps = {rank: {**records[rank]["steps"], **resumed[rank]["steps"]} for rank in (0, 1)}
    assert sorted(steps[0], key=int) == ["1", "2", "3", "4"]
    seen = []
    for step in ("1", "2", "3", "4"):
        ids = [steps[rank][step]["ids"] for rank in (0, 1)]
        assert len(ids[0]) == len(ids[1]) == 1 and ids[0] != ids[1]  # each rank its own slice of the batch
        assert steps[0][step]["loss"] == steps[1][step]["loss"]      # the loss is reduced over the group
        seen += ids[0] + ids[1]
    assert sorted(seen) == sorted(f"obj{i}" for i in range(NUM_PAIRS))  # one epoch, no sample twice, none lost
    # models are written by rank 0 only: checkpoints' unet/ and the final pipeline
    assert records[1]["saves"] == resumed[1]["saves"] == []
    assert any(s.endswith("/unet") for s in records[0]["saves"])
    assert any("pipeline" in s for s in resumed[0]["saves"])


def test_a_save_failing_on_one_process_stops_every_process(workdir, tmp_path):
    """Rank 1 cannot write its part of checkpoint-1: both ranks exit with a CheckpointError instead of
    rank 0 waiting for it forever, and no checkpoint (or hidden partial folder) is left."""
    out = tmp_path / "out"
    result, records = _launch(tmp_path, [str(tmp_path / "driver.py")] + _flags(workdir, out, checkpointing_steps=1),
                              "fail", TEST_FAIL_SAVE_RANK="1")
    assert records[0]["code"] == records[1]["code"] == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("train_sharpit: error:")]
    assert any("failed on process 1" in line and "No space left on device" in line for line in errors), errors
    assert any("checkpoint-1" in line and "No space left on device" in line for line in errors), errors
    assert list_checkpoints(out) == [] and not _hidden(out)


def test_a_mislaunch_on_cpu_is_one_line_with_the_command_that_works(workdir, tmp_path):
    """accelerate launch --multi_gpu --num_processes 2 without a GPU starts two processes that each
    think they are alone; the script says so once, names the working command, and writes nothing."""
    out = tmp_path / "out"
    args = _flags(workdir, out)
    result, _ = _launch(tmp_path, ["-m", "training.train_sharpit"] + args, "mislaunch", cpu=False)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("train_sharpit:")]
    assert len(errors) == 1, result.stderr[-3000:]
    expected = "ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m training.train_sharpit "
    assert "WORLD_SIZE=2" in errors[0] and "accelerate sees 1" in errors[0]
    assert errors[0].endswith(expected + shlex.join(args))
    assert not out.exists()


def test_more_processes_than_gpus_is_a_launch_error(monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(LaunchError, match="4 processes on this machine but it has 2 GPU"):
        _check_gpus(["--train_data", "p"])
    monkeypatch.setenv("ACCELERATE_USE_CPU", "1")
    _check_gpus(["--train_data", "p"])  # CPU processes need no GPU each


def test_printed_commands():
    assert _command(1, True, ["--a", "x y"]) == "python -m training.train_sharpit --a 'x y'"
    assert _command(3, False, []) == "accelerate launch --multi_gpu --num_processes 3 -m training.train_sharpit"
    assert _resume_args(["--resume_from_checkpoint", "runs/c-5", "--overwrite_output_dir", "--seed", "1"]) == [
        "--seed", "1", "--resume_from_checkpoint", "latest"]


# --- item 2: stop signals, partial folders, resume checks -----------------------------------------

def test_sigterm_to_the_process_group_saves_a_checkpoint_and_exits_75(workdir, tmp_path):
    """A scheduler's SIGTERM to the whole process group (the trainer and its 2 loader workers): the step
    finishes, a checkpoint is saved, the resume command printed, exit status 75. A hidden partial
    folder of a killed earlier save is removed at start and checkpoints_total_limit keeps one."""
    out = tmp_path / "out"
    out.mkdir()
    (out / ".checkpoint-9.k2j4.partial").mkdir()
    (out / ".checkpoint-9.k2j4.partial" / "optimizer.bin").write_bytes(b"half")
    (out / ".pipeline.x7.partial").mkdir()
    args = _flags(workdir, out, max_train_steps=500, checkpointing_steps=2, checkpoints_total_limit=1,
                  dataloader_num_workers=2)
    proc = subprocess.Popen([sys.executable, "-m", "training.train_sharpit"] + args, env=_env(tmp_path), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not list_checkpoints(out) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert not (out / ".checkpoint-9.k2j4.partial").exists() and not (out / ".pipeline.x7.partial").exists()
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == EXIT_STOPPED, err[-3000:]
    assert "Traceback" not in err and "DataLoader worker" not in err
    last = err.strip().splitlines()[-1]
    checkpoints = list_checkpoints(out)
    assert len(checkpoints) == 1 and not _hidden(out)  # total limit 1; nothing half-written left
    step = json.loads((checkpoints[0] / "training_state.json").read_text())["global_step"]
    assert step >= 2 and checkpoints[0].name == f"checkpoint-{step}"
    assert last.startswith(f"train_sharpit: stopped by SIGTERM after step {step}; saved {checkpoints[0]}; resume with: "
                           "python -m training.train_sharpit ")
    resume_args = shlex.split(last.split("resume with: python -m training.train_sharpit ", 1)[1])
    assert resume_args[-2:] == ["--resume_from_checkpoint", "latest"]
    # the printed command continues the run (shortened here to one more step, in this process)
    resume_args[resume_args.index("--max_train_steps") + 1] = str(step + 1)
    assert main(resume_args) == 0
    assert (out / "pipeline" / "model_index.json").is_file()


def test_a_signal_stop_and_resume_is_bit_identical_with_ema(workdir, tmp_path):
    """SIGUSR1 during step 3 of a 6-step run with EMA: checkpoint-3 is saved, TrainingStopped raised;
    the resumed run ends with the same EMA weights and optimiser state as an uninterrupted one."""
    kw = dict(max_train_steps=6, train_batch_size=2, checkpointing_steps=4, use_ema=True, ema_decay=0.9)
    straight = train(_config(workdir, tmp_path / "straight", **kw))

    def signal_during_step_3(step, logs):
        if step == 2:
            os.kill(os.getpid(), signal.SIGUSR1)  # handled after step 3's work: the flag is read at its end

    out = tmp_path / "stopped"
    handler = signal.getsignal(signal.SIGUSR1)
    with pytest.raises(TrainingStopped) as stop:
        train(_config(workdir, out, **kw), step_callback=signal_during_step_3, argv=["--seed", "5"])
    assert signal.getsignal(signal.SIGUSR1) == handler  # the previous handler is back
    assert stop.value.step == 3 and stop.value.checkpoint == out / "checkpoint-3" and stop.value.reason == "SIGUSR1"
    assert stop.value.resume_command == "python -m training.train_sharpit --seed 5 --resume_from_checkpoint latest"
    assert (out / "checkpoint-3" / "unet_ema" / "diffusion_pytorch_model.safetensors").is_file()
    resumed = train(_config(workdir, out, resume_from_checkpoint="latest", **kw))
    a = load_file(str(straight / "unet" / "diffusion_pytorch_model.safetensors"))  # the EMA weights
    b = load_file(str(resumed / "unet" / "diffusion_pytorch_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    opt_a = torch.load(tmp_path / "straight" / "checkpoint-4" / "optimizer.bin", weights_only=True)
    opt_b = torch.load(out / "checkpoint-4" / "optimizer.bin", weights_only=True)
    assert all(torch.equal(opt_a["state"][i]["exp_avg"], opt_b["state"][i]["exp_avg"]) for i in opt_a["state"])


def test_resume_refuses_another_batch_geometry_unless_allow_reshape(workdir, tmp_path):
    out = tmp_path / "out"
    train(_config(workdir, out, max_train_steps=3, train_batch_size=2))  # checkpoint-3: 6 samples seen
    with pytest.raises(CheckpointError, match=r"1 process\(es\) x train_batch_size 2 x gradient_accumulation_steps 1 "
                                              r"\(this run: 1 x 3 x 1\).*--allow_reshape.*\(6 samples seen\)"):
        train(_config(workdir, out, max_train_steps=4, train_batch_size=3, resume_from_checkpoint="latest"))
    with pytest.raises(CheckpointError, match=r"\(this run: 1 x 2 x 2\)"):
        train(_config(workdir, out, max_train_steps=4, train_batch_size=2, gradient_accumulation_steps=2,
                      resume_from_checkpoint="latest"))
    # a checkpoint written by 2 processes is refused by 1
    two = tmp_path / "two"
    shutil.copytree(out / "checkpoint-3", two / "checkpoint-3")
    state_file = two / "checkpoint-3" / "training_state.json"
    state = json.loads(state_file.read_text())
    state.update(num_processes=2, train_batch_size=1)
    state_file.write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match=r"2 process\(es\) x train_batch_size 1 .*\(this run: 1 x 2 x 1\)"):
        train(_config(workdir, two, max_train_steps=4, train_batch_size=2, resume_from_checkpoint="latest"))

    # --allow_reshape: batch 2 -> 3 goes on from sample 6 of epoch 0's order (7 and 8 with batch 3 would
    # not fit the epoch of 8 pairs: the next epoch starts)
    ids = []
    train(_config(workdir, out, max_train_steps=4, train_batch_size=3, allow_reshape=True,
                  resume_from_checkpoint="latest"), step_callback=lambda step, logs: ids.append(logs["object_ids"]))
    entries = PairDataset(workdir / "pairs").entries
    epoch1 = EpochBatchSampler(NUM_PAIRS, 3, seed=5).epoch_order(1)
    assert ids == [[entries[i].object_id for i in epoch1[:3].tolist()]]
    assert json.loads((out / "checkpoint-3" / "training_state.json").read_text())["samples_seen"] == 6


def test_reshape_position_keeps_the_samples_seen():
    # 12 samples; 2 of batch 3 seen (6 samples) -> batch 2 goes on at its 3rd batch, batch 4 rounds up
    assert reshape_position(2, 12, 3, 2) == 3
    assert reshape_position(2, 12, 3, 4) == 2
    assert reshape_position(4 + 2, 12, 3, 2) == 6 + 3  # epoch 1
    assert reshape_position(3, 12, 3, 5) == 2  # 9 seen: the epoch's 2 batches of 5 are used up -> next epoch
    assert reshape_position(2, 12, 3, 2, new_num_samples=16) == 3  # 8 batches per epoch now: still batch 3


def test_a_checkpoint_of_the_earlier_layout_is_refused(tmp_path):
    from training.checkpoint import read_training_state

    (tmp_path / "checkpoint-5").mkdir()
    (tmp_path / "checkpoint-5" / "training_state.json").write_text('{"global_step": 5}')
    with pytest.raises(CheckpointError, match="earlier train_sharpit"):
        read_training_state(tmp_path / "checkpoint-5")


def test_a_missing_rng_file_is_an_error(workdir, tmp_path):
    out = tmp_path / "out"
    train(_config(workdir, out, max_train_steps=3))
    (out / "checkpoint-3" / "random_states_0.pkl").unlink()
    with pytest.raises(CheckpointError, match="random_states_0.pkl, the RNG states of process 0, is missing"):
        train(_config(workdir, out, max_train_steps=4, resume_from_checkpoint="latest"))
    # starting over removes the earlier run's checkpoints: a later "latest" cannot pick one of them
    train(_config(workdir, out, max_train_steps=1, checkpointing_steps=1, overwrite_output_dir=True))
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-1"] and not _hidden(out)


def test_pruning_never_shows_a_half_deleted_checkpoint(tmp_path):
    for step in (1, 2, 3):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "training_state.json").write_text("{}")
    (tmp_path / ".checkpoint-4.ab.partial").mkdir()
    removed = prune_checkpoints(tmp_path, 2)
    assert [p.name for p in removed] == [".checkpoint-4.ab.partial", "checkpoint-1"]
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-3"] and not _hidden(tmp_path)


# --- item 4: shards ------------------------------------------------------------------------------

def _truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)


def test_truncated_and_missing_shards_are_found_at_start(tmp_path, caplog):
    pairs = _write_pairs(tmp_path / "pairs")
    shards = sorted(pairs.glob("pairs-*.tar"))
    entries = read_index(pairs)
    cut = next(e for e in entries if e.shard == shards[1].name)
    _truncate(shards[1], cut.coarse[0] + 10)  # ends inside an indexed member
    last = [e for e in entries if e.shard == shards[2].name][-1]
    _truncate(shards[2], last.coarse[0] + last.coarse[1] + 700)  # indexed members intact, the last .json cut
    _truncate(shards[0], shards[0].stat().st_size - 1024)  # only record padding gone: still a whole tar
    with pytest.raises(CorruptFileError, match=rf"{shards[1].name}: truncated: .*holds 2 indexed pair\(s\) "
                                               r"\(and 1 more shard\(s\)\).*--skip_corrupt_shards"):
        PairDataset(pairs)
    with caplog.at_level(logging.WARNING, logger="sharpit.training"):
        dataset = PairDataset(pairs, skip_corrupt_shards=True)
    assert len(dataset) == NUM_PAIRS - 4 and set(dataset.skipped_shards) == {shards[1].name, shards[2].name}
    assert "end-of-archive marker" in dataset.skipped_shards[shards[2].name]
    assert sum("skipping" in r.getMessage() for r in caplog.records) == 2
    shards[3].unlink()
    with pytest.raises(CorruptFileError, match="missing"):
        PairDataset(pairs, skip_corrupt_shards=False)


@pytest.mark.parametrize("workers", [0, 2])
def test_broken_shards_end_training_with_one_line_or_are_skipped(workdir, tmp_path, capsys, workers):
    """A truncated shard stops the CLI at start with one line (or is skipped with --skip_corrupt_shards);
    a shard that passes the scan but holds a corrupt PNG gives the same one-line error whether it is
    read in this process or in a DataLoader worker."""
    pairs = _write_pairs(tmp_path / "pairs")
    shards = sorted(pairs.glob("pairs-*.tar"))
    _truncate(shards[0], 2000)
    base = _flags(workdir, tmp_path / "a", train_data=pairs, max_train_steps=2, checkpointing_steps=100,
                  dataloader_num_workers=workers)
    assert main(base) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines()[-1].startswith("train_sharpit: error:") and "--skip_corrupt_shards" in err
    assert "Traceback" not in err
    assert main(base + ["--skip_corrupt_shards"]) == 0
    assert (tmp_path / "a" / "pipeline" / "model_index.json").is_file()
    capsys.readouterr()

    # same size, garbage bytes inside every PNG: the scan passes, decoding fails in the loader
    shards[0].unlink()
    for entry in read_index(pairs):
        if entry.shard != shards[0].name:
            offset, size = entry.target
            with open(pairs / entry.shard, "r+b") as f:
                f.seek(offset + 40)
                f.write(b"\xff" * (size - 60))
    args = _flags(workdir, tmp_path / "b", train_data=pairs, max_train_steps=2, dataloader_num_workers=workers,
                  skip_corrupt_shards=True)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "DataLoader worker" not in err and "Caught" not in err
    errors = [line for line in err.splitlines() if line.startswith("train_sharpit: error:")]
    assert len(errors) == 1 and errors[0] == err.strip().splitlines()[-1]
    assert ".tar: cannot read the target grid of sample 'obj" in errors[0]
