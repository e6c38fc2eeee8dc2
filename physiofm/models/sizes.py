"""Named CBraMod sizes: ``create_model("cbramod-base")`` is the published encoder.

All sizes keep CBraMod's 200-sample patches and ``d_model`` 200 (so any two encoders fuse, and
the patch embedding and head match the official checkpoint's shapes); they differ in depth only.
"""

from __future__ import annotations

from physiofm.models.cbramod import CBraMod

_LAYER = {"d_model": 200, "dim_feedforward": 800, "nhead": 8, "dropout": 0.1, "out_dim": 200}

MODEL_SIZES: dict[str, dict] = {
    "cbramod-base": {**_LAYER, "n_layer": 12},  # upstream CBraMod: 4,924,000 parameters
    "cbramod-small": {**_LAYER, "n_layer": 4},  # 1,703,200 parameters
    "cbramod-tiny": {**_LAYER, "n_layer": 1},  # 495,400 parameters: tests and smoke runs
}
"""The :class:`CBraMod` keyword arguments of each named size (patch embedding 52,600
parameters, 402,600 per layer, reconstruction head 40,200)."""


def create_model(name: str, **overrides) -> CBraMod:
    """A freshly initialised :class:`CBraMod` of the size ``name`` (a key of :data:`MODEL_SIZES`).

    ``overrides`` replace or add :class:`CBraMod` keyword arguments (``dropout=0.0``,
    ``n_layer=2``, …).  An unknown name raises ``ValueError`` listing the known ones.
    """
    if name not in MODEL_SIZES:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODEL_SIZES)}")
    return CBraMod(**{**MODEL_SIZES[name], **overrides})
