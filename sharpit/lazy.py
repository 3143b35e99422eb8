"""Lazy package exports (PEP 562), so importing a light part of a package (a constant, an option
class) does not pull in diffusers and transformers through the package's ``__init__``."""

from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, Optional

__all__ = ["lazy_exports"]


def lazy_exports(package: str, names: Dict[str, str], namespace: Dict[str, Any],
                 fallback: Optional[Callable[[str], Any]] = None):
    """The module-level ``__getattr__`` and ``__dir__`` of ``package``.

    Args:
        package: the package's ``__name__``.
        names: public name -> relative module that defines it (``{"ShapEGenerator": ".shap_e"}``);
            imported on first access and then cached in ``namespace``.
        namespace: the package's ``globals()``.
        fallback: called with names not in ``names`` (e.g. deprecated aliases that warn on every
            access); by default they raise ``AttributeError``.
    """

    def __getattr__(name: str):
        if name in names:
            value = getattr(importlib.import_module(names[name], package), name)
            namespace[name] = value
            return value
        if fallback is not None:
            return fallback(name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(list(namespace) + list(names))

    return __getattr__, __dir__
