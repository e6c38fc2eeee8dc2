"""Loading CBraMod weights from a local file (the official checkpoint or braindecode's)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from physiofm.models.cbramod import CBraMod

_WRAPPERS = ("state_dict", "model", "model_state_dict")
_PREFIXES = ("module.", "model.", "backbone.")
# braindecode's CBraMod adds a classification layer; it is not part of the encoder.
_EXTRA = ("final_layer.",)


class CheckpointError(ValueError):
    """A checkpoint whose keys or shapes do not match the model (the message names them)."""


def _unwrap(state: dict) -> dict[str, torch.Tensor]:
    for key in _WRAPPERS:
        if key in state and isinstance(state[key], dict):
            state = state[key]
    for prefix in _PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return {k: v for k, v in state.items() if not k.startswith(_EXTRA)}


def _natural(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _listing(names: list[str], limit: int = 12) -> str:
    names = sorted(names, key=_natural)
    shown = ", ".join(names[:limit])
    return shown + (f" … ({len(names) - limit} more)" if len(names) > limit else "")


def load_pretrained(path: str | Path, **config) -> CBraMod:
    """A :class:`CBraMod` (built with ``config``) holding the weights of the file at ``path``.

    Reads the official ``pretrained_weights.pth`` (a plain state_dict) and braindecode's
    ``pytorch_model.bin`` (same names; its ``final_layer.*`` is dropped), with
    ``weights_only=True``; ``module.``/``model.`` prefixes and ``{"state_dict": ...}`` wrappers
    are unwrapped.  Missing, unexpected or mis-shaped keys raise :class:`CheckpointError`
    naming them.
    """
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state_dict")
    state = _unwrap(state)
    model = CBraMod(**config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(f"{k} (file {tuple(state[k].shape)}, model {tuple(expected[k].shape)})"
                        for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    problems = []
    if missing:
        problems.append(f"missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listing(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches: {_listing(mismatched)}")
    if problems:
        raise CheckpointError(f"{path} does not fit CBraMod({config or ''}): " + "; ".join(problems))
    model.load_state_dict(state, strict=True)
    return model
