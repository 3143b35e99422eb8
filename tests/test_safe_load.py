"""Third-party checkpoints: tensors come out, pickled code never runs."""

import collections
import contextlib
import os
import sys
import types

import pytest
import torch

from sharpit.coarse.latents import load_latents
from sharpit.errors import CorruptFileError, UnsupportedFormatError
from sharpit.reconstruct import InstantMeshReconstructor
from sharpit.safe_load import Unresolved, load_checkpoint, safe_unpickle_torch_zip
from sharpit.testing.reconstruct import TINY_RECONSTRUCTOR_CONFIG, save_instantmesh_checkpoint, tiny_reconstructor


@contextlib.contextmanager
def foreign_module(name: str):
    """A module that exists only while the pickle is written (as if the writer had a package we lack)."""
    module = types.ModuleType(name)

    class DictConfig:                       # an OmegaConf-like hyper-parameter container
        def __init__(self, content):
            self._content = content

    class Callback(dict):
        pass

    for cls in (DictConfig, Callback):
        cls.__module__, cls.__qualname__ = name, cls.__name__
        setattr(module, cls.__name__, cls)
    parent = name.rpartition(".")[0]
    added = {name: module, **({parent: types.ModuleType(parent)} if parent else {})}
    sys.modules.update(added)
    try:
        yield module
    finally:
        for key in added:
            del sys.modules[key]


def test_tensors_rebuild_exactly_like_torch_load(tmp_path):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    entries = collections.OrderedDict(
        dense=base, view=base[1:, 2:], transposed=base.t(), broadcast=torch.ones(5).expand(3, 5),
        half=torch.randn(3, dtype=torch.float16), bf16=torch.randn(2, 2, dtype=torch.bfloat16),
        ints=torch.tensor([1, 2], dtype=torch.int64), flags=torch.tensor([True, False]),
        param=torch.nn.Parameter(torch.ones(2)), empty=torch.empty(0), size=torch.Size([2, 3]))
    path = tmp_path / "plain.pt"
    torch.save({"state_dict": entries}, path)
    ours, unresolved = safe_unpickle_torch_zip(path)
    ref = torch.load(path, weights_only=True)
    assert not unresolved and isinstance(ours["state_dict"], collections.OrderedDict)
    for name, value in ref["state_dict"].items():
        got = ours["state_dict"][name]
        if isinstance(value, torch.Tensor):
            assert (got.dtype, got.shape, got.stride(), got.storage_offset()) == \
                (value.dtype, value.shape, value.stride(), value.storage_offset()), name
            assert torch.equal(got, value), name
        else:
            assert got == value and type(got) is type(value), name
    assert isinstance(ours["state_dict"]["param"], torch.nn.Parameter)
    shared = ours["state_dict"]
    assert shared["view"].untyped_storage().data_ptr() == shared["dense"].untyped_storage().data_ptr()


def test_foreign_classes_become_placeholders(tmp_path):
    path = tmp_path / "foreign.ckpt"
    with foreign_module("_sharpit_absent_pkg.config") as mod:
        callbacks = mod.Callback(best_score=torch.tensor(0.5))
        torch.save({"state_dict": {"w": torch.ones(2)}, "hyper_parameters": mod.DictConfig({"lr": 1e-4}),
                    "callbacks": {mod.Callback: callbacks}}, path)
    assert "_sharpit_absent_pkg.config" not in sys.modules
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)          # what sharpit had to give up on before
    obj = load_checkpoint(path)
    assert torch.equal(obj["state_dict"]["w"], torch.ones(2))
    hp = obj["hyper_parameters"]
    assert isinstance(hp, Unresolved) and hp.qualname == "_sharpit_absent_pkg.config.DictConfig"
    assert hp.state == {"_content": {"lr": 1e-4}}
    assert "_sharpit_absent_pkg.config" not in sys.modules     # never imported


class _Exploit:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class _ExecExploit(_Exploit):
    def __reduce__(self):
        return exec, (f"open({self.command!r}, 'w').write('pwned')",)


@pytest.mark.parametrize("exploit", [_Exploit, _ExecExploit])
def test_malicious_reduce_is_never_called(tmp_path, exploit):
    marker = tmp_path / "pwned"
    payload = f"touch {marker}" if exploit is _Exploit else str(marker)
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"lrm_generator.w": torch.zeros(1)}, "x": exploit(payload)}, path)
    obj = load_checkpoint(path)
    assert not marker.exists()
    assert isinstance(obj["x"], Unresolved) and obj["x"].args == exploit(payload).__reduce__()[1]
    assert torch.equal(obj["state_dict"]["lrm_generator.w"], torch.zeros(1))


def test_lightning_checkpoint_with_foreign_entries_loads_the_reconstructor(tmp_path, monkeypatch):
    from sharpit.reconstruct import config

    monkeypatch.setitem(config.VARIANTS, "tiny", dict(TINY_RECONSTRUCTOR_CONFIG))
    model = tiny_reconstructor(seed=5)
    path = tmp_path / "instant_nerf_tiny.ckpt"
    with foreign_module("_sharpit_absent_pkg.omegaconf") as mod:
        adam = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(4)}},
                "param_groups": [{"lr": 4e-4, "params": [0]}]}
        save_instantmesh_checkpoint(model.state_dict(), path, extras={
            "hyper_parameters": mod.DictConfig({"input_size": 320}), "optimizer_states": [adam],
            "lr_schedulers": [{"last_epoch": 7}], "callbacks": {"ModelCheckpoint": mod.Callback(k=1)}})
    loaded = InstantMeshReconstructor.from_instantmesh_checkpoint(path, variant="tiny")
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name


def test_damaged_files_are_corrupt_not_unsafe(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"w": torch.arange(1000.0)}, good)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[:600])
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint" * 10)
    for path in (truncated, garbage):
        with pytest.raises(CorruptFileError, match=path.name):
            load_checkpoint(path)
    with pytest.raises(CorruptFileError, match="(?i)re-download"):
        InstantMeshReconstructor.from_instantmesh_checkpoint(garbage, variant="large")


def test_cap3d_latent_is_read_through_the_safe_loader(tmp_path):
    width = 512
    path = tmp_path / "obj.pt"
    torch.save(torch.randn(width), path)
    latents, _ = load_latents(path, width)
    assert latents.shape == (1, width)


class _Layout:
    """Pickles as a tensor of ``size`` over the storage of ``base``, whatever the storage holds."""

    def __init__(self, base: torch.Tensor, size: tuple):
        self.base, self.size = base, size

    def __reduce__(self):
        storage = torch.TypedStorage(wrap_storage=self.base.untyped_storage(), dtype=self.base.dtype, _internal=True)
        return torch._utils._rebuild_tensor_v2, (storage, 0, self.size, (1,), False, collections.OrderedDict())


@pytest.mark.parametrize("base,size", [(torch.arange(4.0), (1000,)), (torch.empty(0), (1 << 28,))],
                         ids=["past-the-end", "empty-storage"])
def test_tensor_outside_its_storage_is_corrupt(tmp_path, base, size):
    """An empty storage is resizable: without a bounds check the file would get 1 GiB of
    uninitialised memory."""
    path = tmp_path / "layout.ckpt"
    with foreign_module("_sharpit_absent_pkg.cfg") as mod:      # forces the allow-list reader
        torch.save({"x": _Layout(base, size), "hp": mod.DictConfig({})}, path)
    with pytest.raises(CorruptFileError, match="needs .* elements of a storage that holds"):
        load_checkpoint(path)


def test_legacy_format_with_foreign_objects_is_unsupported_not_corrupt(tmp_path):
    path = tmp_path / "legacy.ckpt"
    with foreign_module("_sharpit_absent_pkg.cfg") as mod:
        torch.save({"state_dict": {"w": torch.ones(2)}, "hp": mod.DictConfig({})}, path,
                   _use_new_zipfile_serialization=False)
    with pytest.raises(UnsupportedFormatError, match=r"legacy .*torch\.save\(torch\.load\(path, weights_only=False\)"):
        load_checkpoint(path)
    plain = tmp_path / "legacy_plain.ckpt"             # tensors only: torch's own reader takes it
    torch.save({"w": torch.ones(2)}, plain, _use_new_zipfile_serialization=False)
    assert torch.equal(load_checkpoint(plain)["w"], torch.ones(2))
