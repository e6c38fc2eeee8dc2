"""physiofm: a data-pipeline-first toolkit for physiological foundation models.

The public API, importable from here (each name is imported on first use, so ``import physiofm``
stays fast)::

    from physiofm import build, validate, StreamingDataset, ZarrDataset, CBraMod, create_model, load_pretrained, corpora
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_API = {
    "build": ("physiofm.store.build", "build"),
    "validate": ("physiofm.store.validate", "validate"),
    "StreamingDataset": ("physiofm.train.data.stream", "StreamingDataset"),
    "ZarrDataset": ("physiofm.train.data.zarr_dataset", "ZarrDataset"),
    "CBraMod": ("physiofm.models", "CBraMod"),
    "create_model": ("physiofm.models", "create_model"),
    "load_pretrained": ("physiofm.models", "load_pretrained"),
    "corpora": ("physiofm.corpora", None),
}
__all__ = [
    "CBraMod",
    "StreamingDataset",
    "ZarrDataset",
    "__version__",
    "build",
    "corpora",
    "create_model",
    "load_pretrained",
    "validate",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from physiofm import corpora
    from physiofm.models import CBraMod, create_model, load_pretrained
    from physiofm.store.build import build
    from physiofm.store.validate import validate
    from physiofm.train.data.stream import StreamingDataset
    from physiofm.train.data.zarr_dataset import ZarrDataset


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'physiofm' has no attribute {name!r}")
    module, attribute = _API[name]
    value = (
        importlib.import_module(module) if attribute is None else getattr(importlib.import_module(module), attribute)
    )
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
