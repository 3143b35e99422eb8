"""The files of an evaluation run folder, and the rules that make a run resumable.

``<out>/`` holds:

* ``config.json``: what the numbers depend on (seed, extractors, geometry settings, each
  method's settings). A rerun into the same folder must match it; a method added later is
  appended; anything else that differs is refused (:func:`check_config`).
* ``results.jsonl``: one JSON object per (asset, method), appended with a single ``write`` on an
  ``O_APPEND`` descriptor and fsync-ed, so concurrent processes never interleave and a kill loses
  at most the line being written (a torn last line is ignored on reading and redone).
* ``failures.jsonl``: one line per asset (or asset x method) that failed, with the reason.
* ``grids/<asset>/{coarse,ground_truth,<method>}.png`` and ``features/<asset>/<name>.safetensors``
  (Inception pool3 features of the six views, for FID over the whole set).
* ``table.md``, ``distributions.png``, ``time_vs_quality.png``, ``index.html`` (:mod:`.report`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Set, Tuple

from ..atomic import is_temporary, write_bytes_atomic
from ..errors import OutputExistsError

__all__ = ["CONFIG_FILE", "RESULTS_FILE", "FAILURES_FILE", "append_jsonl", "read_jsonl", "done_pairs",
           "check_config", "write_config"]

CONFIG_FILE = "config.json"
RESULTS_FILE = "results.jsonl"
FAILURES_FILE = "failures.jsonl"


def append_jsonl(path: Path, record: Dict[str, Any]) -> None:
    """Append ``record`` as one line to ``path`` in a single ``write`` (O_APPEND), then fsync."""
    data = (json.dumps(record, sort_keys=True) + "\n").encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path: Path) -> List[Dict[str, Any]]:
    """The complete JSON lines of ``path`` ([] when absent); a torn or unreadable line is skipped."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


def done_pairs(out: Path) -> Set[Tuple[str, str]]:
    """``{(asset, method key)}`` already in ``results.jsonl``."""
    return {(r["asset"], r["method_key"]) for r in read_jsonl(out / RESULTS_FILE) if "asset" in r and "method_key" in r}


def _first_difference(old: Any, new: Any, where: str = "") -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                return _first_difference(old.get(key), new.get(key), f"{where}.{key}" if where else str(key))
        return ""
    return f"{where} {old!r} (now {new!r})"


def check_config(out: Path, config: Dict[str, Any]) -> Dict[str, Any]:
    """The config this run writes: ``config`` merged with the folder's ``config.json`` (methods the
    folder already has must have the same settings; new ones are added).

    Raises:
        OutputExistsError: ``out`` holds a run made with other settings (names the first difference),
            or an unreadable ``config.json``, or files but no ``config.json`` (not a run folder).
    """
    path = out / CONFIG_FILE
    if not path.is_file():
        # temporaries: another process of the launch writing its config.json at this moment; and
        # its config.json may land between the two looks, so the second one decides
        listed = [p for p in out.iterdir() if not is_temporary(p)] if out.is_dir() else []
        if not path.is_file():
            if listed:
                raise OutputExistsError(out, "--out holds files but no config.json (not an evaluation run); "
                                             "choose another --out")
            return config
    try:
        saved = json.loads(path.read_text())
    except ValueError:
        raise OutputExistsError(path, "unreadable config.json; choose another --out") from None
    merged = dict(config, methods={**saved.get("methods", {}), **config["methods"]})
    for key in sorted(set(saved) | set(config)):
        if key == "methods":
            continue
        if saved.get(key) != config.get(key):
            raise OutputExistsError(out, f"--out holds a run made with {_first_difference(saved.get(key), config.get(key), key)}; "
                                         "use the same settings to resume, or choose another --out")
    for name, settings in config["methods"].items():
        if name in saved.get("methods", {}) and saved["methods"][name] != settings:
            diff = _first_difference(saved["methods"][name], settings, f"methods.{name}")
            raise OutputExistsError(out, f"--out holds a run made with {diff}; use the same settings to resume, "
                                         "or choose another --out")
    return merged


def write_config(out: Path, config: Dict[str, Any]) -> None:
    write_bytes_atomic(out / CONFIG_FILE, (json.dumps(config, indent=2, sort_keys=True) + "\n").encode("utf-8"))
