"""Reading third-party PyTorch checkpoints without executing anything they contain.

Released checkpoints are pickles. ``torch.load(weights_only=True)`` never runs pickled code, but
it refuses a whole file as soon as one entry names a class it does not know, and a Lightning
``.ckpt`` (InstantMesh's ``instant_nerf_large.ckpt``, ...) may carry OmegaConf hyper-parameters,
callback states or optimizer objects next to the tensors. :func:`load_checkpoint` first tries
``weights_only=True``; when that refuses the file it reads it again with an allow-list unpickler:

* the zip container written by ``torch.save`` (PyTorch >= 1.6) is opened directly; tensors are
  rebuilt from their raw storages (shared storages stay shared, offsets and strides are kept);
* only these globals resolve to real objects: ``collections.OrderedDict``, ``torch.Size``,
  torch's tensor and parameter rebuild functions (re-implemented here, so nothing of torch's
  pickle hooks runs), the legacy ``torch.*Storage`` type tags and ``torch`` dtypes;
* every other global (a class from a module that does not exist here, ``os.system``,
  ``builtins.eval``, ...) becomes an inert :class:`Unresolved` placeholder. Its module is never
  imported and it is never called: "calling" it just records the arguments.

The legacy non-zip format (PyTorch < 1.6) is read by ``weights_only=True`` alone: a legacy file it
refuses raises :class:`~sharpit.errors.UnsupportedFormatError` with a conversion recipe.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Dict, Tuple

import torch

from .errors import CorruptFileError, UnsupportedFormatError

__all__ = ["load_checkpoint", "safe_unpickle_torch_zip", "Unresolved"]

_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64, "FloatStorage": torch.float32, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool, "ComplexFloatStorage": torch.complex64, "ComplexDoubleStorage": torch.complex128,
}
#: The opcode bytes of the magic number that opens a legacy (PyTorch < 1.6) ``torch.save`` file.
_LEGACY_MAGIC = pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2)[2:-1]
_DTYPE_NAMES = {str(d).split(".")[-1]: d for d in (
    torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16,
    torch.int8, torch.uint8, torch.bool, torch.complex64, torch.complex128)}


class Unresolved:
    """Stands in for an object whose class or function the allow-list does not know.

    Attributes:
        qualname: ``"module.name"`` of the global the pickle named.
        args: the positional arguments it would have been called with (nothing was called).
        state: what the pickle would have passed to ``__setstate__``, if anything.
    """

    qualname = "?"

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs, self.state = args, kwargs, None

    def __setstate__(self, state):
        self.state = state

    def __setitem__(self, key, value):          # dict subclasses are filled item by item
        self.__dict__.setdefault("items", {})[key] = value

    def append(self, value):                    # list subclasses
        self.__dict__.setdefault("list", []).append(value)

    def extend(self, values):
        self.__dict__.setdefault("list", []).extend(values)

    def __repr__(self) -> str:
        return f"<unresolved {self.qualname}>"


def _placeholder(module: str, name: str) -> type:
    return type(name, (Unresolved,), {"qualname": f"{module}.{name}", "__module__": "sharpit.safe_load"})


class _StorageTag:
    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored) -> torch.Tensor:
    """A view of ``storage``, after checking that it lies inside it: ``Tensor.set_`` would
    otherwise grow a resizable (empty) storage to whatever size the file names."""
    if not isinstance(storage, torch.TypedStorage):
        raise pickle.UnpicklingError("a tensor refers to something that is not a storage")
    offset, size, stride = int(storage_offset), tuple(map(int, size)), tuple(map(int, stride))
    if len(size) != len(stride) or offset < 0 or min(size + stride, default=0) < 0:
        raise pickle.UnpicklingError(f"a tensor has an invalid layout (offset {offset}, size {size}, stride {stride})")
    if all(size):
        end = offset + sum((n - 1) * st for n, st in zip(size, stride)) + 1
        held = storage._untyped_storage.nbytes() // storage.dtype.itemsize
        if end > held:
            raise pickle.UnpicklingError(f"a tensor needs {end} elements of a storage that holds {held}")
    return torch.empty((0,), dtype=storage.dtype).set_(storage._untyped_storage, offset, size, stride)


def _rebuild_parameter(data, requires_grad, *_ignored):
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError("a parameter holds something that is not a tensor")
    return torch.nn.Parameter(data, requires_grad=bool(requires_grad))


def _rebuild_from_type(func, new_type, args, state):
    result = func(*args)
    return result if isinstance(result, torch.Tensor) else Unresolved(result)


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch", "Size"): torch.Size,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
}


class _AllowListUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str):
        super().__init__(io.BytesIO(data))
        self._archive, self._prefix = archive, prefix
        self._storages: Dict[str, torch.UntypedStorage] = {}
        self.unresolved = set()

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageTag(_STORAGE_DTYPES[name])
        if module == "torch" and name in _DTYPE_NAMES:
            return _DTYPE_NAMES[name]
        self.unresolved.add(f"{module}.{name}")
        return _placeholder(module, name)

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
        _, tag, key, _location, numel = pid
        if isinstance(tag, _StorageTag):
            dtype = tag.dtype
        elif isinstance(tag, torch.dtype):
            dtype = tag
        else:
            raise pickle.UnpicklingError(f"unknown storage type {tag!r:.80}")
        key = str(key)
        if key not in self._storages:
            raw = self._archive.read(f"{self._prefix}data/{key}")
            expected = int(numel) * torch.empty((), dtype=dtype).element_size()
            if len(raw) != expected:
                raise pickle.UnpicklingError(f"storage {key} holds {len(raw)} bytes, expected {expected}")
            self._storages[key] = torch.frombuffer(bytearray(raw), dtype=torch.uint8).untyped_storage() \
                if raw else torch.UntypedStorage(0)
        return torch.TypedStorage(wrap_storage=self._storages[key], dtype=dtype, _internal=True)


def _is_legacy_torch_file(path: Path) -> bool:
    """Whether ``path`` starts like a pre-1.6 ``torch.save`` file, whose first pickle is the int
    ``torch.serialization.MAGIC_NUMBER`` (compared as bytes, never unpickled)."""
    with open(path, "rb") as f:
        return _LEGACY_MAGIC in f.read(32)


def safe_unpickle_torch_zip(path: "os.PathLike[str] | str") -> Tuple[Any, set]:
    """Read a ``torch.save`` zip file with the allow-list unpickler.

    Returns:
        ``(object, unresolved)``: the unpickled object (tensors real, foreign objects
        :class:`Unresolved`) and the set of ``"module.name"`` globals that were replaced.
    Raises:
        UnsupportedFormatError: the legacy (PyTorch < 1.6) format.
        CorruptFileError: not a PyTorch checkpoint, or a damaged one.
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):
        if _is_legacy_torch_file(path):
            raise UnsupportedFormatError(
                path, "is in PyTorch's legacy (< 1.6) format and holds objects that torch.load(weights_only=True) "
                      "refuses (or is damaged); sharpit reads such checkpoints without running code only in the zip "
                      "format torch.save writes since PyTorch 1.6. Convert it once, in an environment you trust: "
                      "torch.save(torch.load(path, weights_only=False), new_path)")
        raise CorruptFileError(path, "is not a PyTorch checkpoint (neither torch.save's zip format nor its legacy "
                                     "pickle format): it is damaged or of another kind; re-download it")
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
            if len(pickles) != 1:
                raise CorruptFileError(path, f"expected one data.pkl in the archive, found {len(pickles)}")
            prefix = pickles[0][: -len("data.pkl")]
            byteorder = f"{prefix}byteorder"
            if byteorder in archive.namelist() and archive.read(byteorder).strip() not in (b"", b"little"):
                raise CorruptFileError(path, "was saved on a big-endian machine; this reader needs little-endian data")
            unpickler = _AllowListUnpickler(archive.read(pickles[0]), archive, prefix)
            obj = unpickler.load()
    except CorruptFileError:
        raise
    except (pickle.UnpicklingError, zipfile.BadZipFile, KeyError, EOFError, ValueError, TypeError,
            AttributeError, IndexError, RuntimeError) as exc:
        raise CorruptFileError(path, f"is damaged ({type(exc).__name__}: {exc}); re-download it") from exc
    return obj, unpickler.unresolved


def load_checkpoint(path: "os.PathLike[str] | str") -> Any:
    """Load a third-party checkpoint without running code from it.

    ``torch.load(weights_only=True)`` first (memory-mapped, PyTorch's own safe reader); when it
    refuses a global, the allow-list reader above, which keeps every tensor and replaces the
    foreign objects by :class:`Unresolved` placeholders.

    Raises:
        UnsupportedFormatError: a legacy (PyTorch < 1.6) file that ``weights_only=True`` refuses.
        CorruptFileError: a damaged file, or not a PyTorch checkpoint at all.
    """
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError:
        pass                                     # a global weights_only does not allow: read it our way
    except (zipfile.BadZipFile, RuntimeError, EOFError, ValueError, AttributeError, TypeError, OSError) as exc:
        if not zipfile.is_zipfile(path):
            raise CorruptFileError(path, f"cannot be read as a PyTorch checkpoint ({type(exc).__name__}); "
                                         "re-download it") from exc
    return safe_unpickle_torch_zip(path)[0]
