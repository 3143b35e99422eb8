"""prepare_pairs keeps progress per object: a kill loses at most the object in flight, and a rerun
repairs the shard it was writing and resumes (issue 14 item 5)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch

from sharpit.errors import CorruptFileError, OutputNotWritableError
from training.data import PairDataset
from training.shards import ShardWriter, read_index, read_member, repair_ranks_from, scan_shards

REPO = Path(__file__).resolve().parents[1]
TILE = 16


def _grids(count, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [tuple(torch.rand(3, 3 * TILE, 2 * TILE, generator=gen) for _ in range(2)) for _ in range(count)]


def _write(folder, grids, per_shard=10, rank=0, start=0):
    with ShardWriter(folder, rank=rank, samples_per_shard=per_shard) as writer:
        for i, (target, coarse) in enumerate(grids, start=start):
            writer.add(f"obj{i}", f"caption {i}", target, coarse, TILE)


def _member_names(folder):
    names = []
    for shard in sorted(Path(folder).glob("pairs-*.tar")):
        with tarfile.open(shard) as tar:
            names += tar.getnames()
    return names


def _cut(path, size):
    with open(path, "r+b") as f:
        f.truncate(size)


# --- the repair of what a kill leaves ------------------------------------------------------------

@pytest.mark.parametrize("kill", ["inside_member", "after_header", "before_index_line", "inside_index_line"])
def test_rerun_cuts_a_shard_back_to_its_last_indexed_member(tmp_path, kill):
    """Four objects, the kill during the fourth: the shard is cut back to exactly the three-object
    tar (byte for byte), the index to three lines; readers see the damage until then."""
    grids = _grids(4)
    _write(tmp_path / "three", grids[:3])
    _write(tmp_path / "four", grids)
    pairs, shard = tmp_path / "four", "pairs-r000-000000.tar"
    whole3 = (tmp_path / "three" / shard).read_bytes()
    index3 = (tmp_path / "three" / "index-r000.jsonl").read_bytes()
    fourth = json.loads((pairs / "index-r000.jsonl").read_text().splitlines()[3])
    index = pairs / "index-r000.jsonl"
    if kill == "inside_member":      # partly written coarse PNG of obj3, no end-of-archive marker
        _cut(pairs / shard, fourth["coarse"][0] + 100)
        index.write_bytes(index3)
    elif kill == "after_header":     # only obj3's first tar header is on disk
        _cut(pairs / shard, fourth["target"][0])
        index.write_bytes(index3)
    elif kill == "before_index_line":  # obj3 complete in the tar, never indexed
        index.write_bytes(index3)
    else:                            # obj3 complete, its index line cut short
        index.write_bytes(index3 + json.dumps(fourth).encode()[:37])
        with pytest.raises(CorruptFileError, match="line 4 is unfinished.*rerun the same prepare_pairs command"):
            PairDataset(pairs)
    if kill in ("inside_member", "after_header"):  # the start-up check reports the killed shard
        problems = scan_shards(pairs, read_index(pairs))
        assert list(problems) == [shard] and "truncated" in problems[shard]

    with ShardWriter(pairs, samples_per_shard=10) as writer:
        assert (pairs / shard).read_bytes() == whole3 and index.read_bytes() == index3
        writer.add("obj3", "caption 3", *grids[3], TILE)  # the rerun renders obj3 again, into a new shard
    assert scan_shards(pairs, read_index(pairs)) == {}
    dataset = PairDataset(pairs)
    assert [e.object_id for e in dataset.entries] == ["obj0", "obj1", "obj2", "obj3"]
    assert [e.shard for e in dataset.entries][-1] == "pairs-r000-000001.tar"
    assert torch.allclose(dataset[3]["target"], grids[3][0], atol=1 / 255)
    names = _member_names(pairs)
    assert len(names) == len(set(names)) == 12  # every member once, all readable by tarfile


def test_an_unfinished_new_shard_and_old_temporaries_are_removed(tmp_path):
    pairs = tmp_path / "pairs"
    _write(pairs, _grids(3), per_shard=3)
    (pairs / "pairs-r000-000001.tar").write_bytes(b"\0" * 700)  # created, its first object never finished
    (pairs / ".pairs-r000-000002.0123456789ab.tmp.tar").write_bytes(b"x")  # the earlier atomic writer's
    (pairs / ".index-r000.0123456789ab.tmp.jsonl").write_bytes(b"x")
    (pairs / ".pairs-r001-000000.0123456789ab.tmp.tar").write_bytes(b"x")  # another rank's: not ours
    before = (pairs / "pairs-r000-000000.tar").stat()
    with ShardWriter(pairs, samples_per_shard=3) as writer:
        writer.add("obj3", "", *_grids(1, seed=1)[0], TILE)
    assert sorted(p.name for p in pairs.iterdir()) == [".pairs-r001-000000.0123456789ab.tmp.tar", "index-r000.jsonl",
                                                        "pairs-r000-000000.tar", "pairs-r000-000001.tar"]
    after = (pairs / "pairs-r000-000000.tar").stat()  # a finished shard is never rewritten
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert len(PairDataset(pairs)) == 4
    # an unlisted shard of several objects is no interrupted write: it is left alone
    shutil.copy(pairs / "pairs-r000-000000.tar", pairs / "pairs-r000-000007.tar")
    with ShardWriter(pairs, samples_per_shard=3) as writer:
        writer.add("obj4", "", *_grids(1, seed=2)[0], TILE)
    assert (pairs / "pairs-r000-000007.tar").read_bytes() == (pairs / "pairs-r000-000000.tar").read_bytes()
    assert read_index(pairs)[-1].shard == "pairs-r000-000008.tar"


def test_ranks_of_an_earlier_larger_run_are_repaired_by_process_0(tmp_path):
    pairs = tmp_path / "pairs"
    _write(pairs, _grids(2), rank=0)
    _write(pairs, _grids(2, seed=1), rank=1, start=2)
    shard = pairs / "pairs-r001-000000.tar"
    with tarfile.open(shard) as tar:
        last = tar.getmembers()[-1]
    header = tarfile.TarInfo("obj4.target.png")
    header.size = 5000
    with open(shard, "r+b") as f:  # rank 1 was killed 100 bytes into a third object
        f.seek(last.offset_data + -(-last.size // 512) * 512)
        f.write(header.tobuf(tarfile.USTAR_FORMAT) + b"\x89PNG" * 25)
        f.truncate()
    with open(pairs / "index-r001.jsonl", "ab") as f:
        f.write(b'{"object_id": "obj')
    assert repair_ranks_from(pairs, 2) == []  # ranks this run writes itself are left to their writers
    assert repair_ranks_from(pairs, 1) == [1]
    assert scan_shards(pairs, read_index(pairs)) == {} and len(PairDataset(pairs)) == 4


def test_one_writer_per_rank_and_a_failed_write_stops_the_writer(tmp_path, monkeypatch):
    pairs = tmp_path / "pairs"
    grids = _grids(3)
    writer = ShardWriter(pairs)
    with pytest.raises(OutputNotWritableError, match="another prepare_pairs process is writing this rank"):
        ShardWriter(pairs)
    ShardWriter(pairs, rank=1).close()  # other ranks are free
    writer.add("obj0", "", *grids[0], TILE)

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("training.shards.os.fsync", full_disk)
    with pytest.raises(OutputNotWritableError, match="cannot write the pair of 'obj1' \\(No space left on device\\)"):
        writer.add("obj1", "", *grids[1], TILE)
    monkeypatch.undo()
    with pytest.raises(OutputNotWritableError, match="failed earlier"):
        writer.add("obj2", "", *grids[2], TILE)
    writer.close()
    with ShardWriter(pairs) as again:  # what the failed write left is cut off
        again.add("obj1", "", *grids[1], TILE)
    assert [e.object_id for e in PairDataset(pairs).entries] == ["obj0", "obj1"]
    assert sorted(_member_names(pairs)) == sorted(f"obj{i}.{p}" for i in (0, 1) for p in ("target.png", "coarse.png",
                                                                                           "json"))


# --- a real process, killed with SIGKILL, then the same command again -----------------------------

NUM_OBJECTS = 24


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from sharpit.testing.training import save_tiny_training_inputs

    paths = save_tiny_training_inputs(tmp_path_factory.mktemp("resume"))
    for i in range(NUM_OBJECTS - 3):  # copies of the three tiny assets and their latents
        asset = sorted(paths["assets"].iterdir())[i % 3]
        latent = next(paths["latents"].glob(f"{asset.stem}.*"))
        shutil.copy(asset, paths["assets"] / f"{asset.stem}{i:02d}{asset.suffix}")
        shutil.copy(latent, paths["latents"] / f"{asset.stem}{i:02d}{latent.suffix}")
    return paths


def _complete_lines(index):
    data = index.read_bytes() if index.exists() else b""
    return [json.loads(line) for line in data[:data.rfind(b"\n") + 1].decode().splitlines()]


def test_sigkilled_run_resumes_without_rendering_finished_objects_again(inputs, tmp_path):
    out = tmp_path / "pairs"
    cmd = [sys.executable, "-m", "training.prepare_pairs", "--assets", str(inputs["assets"]),
           "--captions", str(inputs["captions"]), "--latents", str(inputs["latents"]), "--output", str(out),
           "--shap_e", str(inputs["shap_e"]), "--tile_size", "32", "--shap_e_grid_size", "24",
           "--samples_per_shard", "4", "--device", "cpu"]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    index = out / "index-r000.jsonl"
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline, seen = time.monotonic() + 120, set()
        while len(_complete_lines(index)) < 6:  # killed with the second shard open
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no progress"
            seen.add(len(_complete_lines(index)))
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    finished = _complete_lines(index)
    assert 6 <= len(finished) < NUM_OBJECTS  # the kill came mid-run
    assert any(count % 4 for count in seen)  # objects were indexed one by one, not a whole shard at once
    before = {e.object_id: (e, read_member(out, e, "target"), read_member(out, e, "coarse"))
              for e in read_index(out)}  # also drops any unfinished index line the kill left

    rerun = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    done = len(finished)
    # only the objects not finished before the kill were rendered again
    assert f"wrote {NUM_OBJECTS - done} pair(s), {done} already done, 0 failed" in rerun.stdout
    assert f"resuming: {done} of this process's {NUM_OBJECTS} object(s) are already done" in rerun.stderr
    lines = _complete_lines(index)
    assert lines[:done] == finished and index.read_bytes().endswith(b"\n")
    ids = [line["object_id"] for line in lines]
    assert len(ids) == len(set(ids)) == NUM_OBJECTS
    dataset = PairDataset(out)  # includes the start-up integrity scan
    assert len(dataset) == NUM_OBJECTS and scan_shards(out, dataset.entries) == {}
    for entry in dataset.entries:
        if entry.object_id in before:  # finished before the kill: same place, same bytes
            old, target, coarse = before[entry.object_id]
            assert entry == old
            assert (read_member(out, entry, "target"), read_member(out, entry, "coarse")) == (target, coarse)
    names = _member_names(out)  # no duplicated or half-written member in any shard
    assert len(names) == len(set(names)) == 3 * NUM_OBJECTS
    assert dataset[len(dataset) - 1]["target"].shape == (3, 96, 64)
