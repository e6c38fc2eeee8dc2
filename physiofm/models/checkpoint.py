"""Saving and loading CBraMod weights: physiofm encoder files and runs, the official checkpoint, braindecode's.

A physiofm encoder file (``encoder.pt``, :func:`save_encoder`) is a plain state_dict with the
checkpoint's key names, so any CBraMod loader reads it; the model's size travels in the
state_dict's metadata (``state._metadata[""]["physiofm"]``, which ``torch.save`` keeps and
``torch.load(weights_only=True)`` restores), and :func:`load_pretrained` rebuilds that size.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from physiofm.models.cbramod import CBraMod

ENCODER_FILE = "encoder.pt"  # what a pretraining run folder holds
FORMAT = "physiofm-encoder-v1"
# Fixed by the weights: a conflicting request is an error.  Anything else (dropout) may be overridden.
_SIZE_KEYS = ("d_model", "dim_feedforward", "n_layer", "nhead", "out_dim")
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
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return {k: v for k, v in state.items() if not k.startswith(_EXTRA)}


def _natural(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _listing(names: list[str], limit: int = 12) -> str:
    names = sorted(names, key=_natural)
    shown = ", ".join(names[:limit])
    return shown + (f" … ({len(names) - limit} more)" if len(names) > limit else "")


def save_encoder(model: CBraMod, path: str | Path) -> None:
    """Write ``model``'s state_dict to ``path``, its config (:attr:`CBraMod.config`) in the metadata."""
    state = model.state_dict()
    state._metadata[""]["physiofm"] = {"format": FORMAT, "config": dict(model.config)}
    torch.save(state, Path(path))


def saved_config(state: dict) -> dict | None:
    """The :class:`CBraMod` config saved in a state_dict by :func:`save_encoder` (None for other files)."""
    saved = getattr(state, "_metadata", {}).get("", {}).get("physiofm")
    return dict(saved["config"]) if isinstance(saved, dict) and saved.get("format") == FORMAT else None


def load_pretrained(source: str | Path, **config) -> CBraMod:
    """A :class:`CBraMod` holding the weights of ``source``: a pretraining run folder (its
    ``encoder.pt``) or a weights file.

    A physiofm encoder file (:func:`save_encoder`) rebuilds the size it was saved with;
    ``config`` may repeat that size (a conflicting ``n_layer``, ``d_model``, … raises
    :class:`CheckpointError`) and change the rest (``dropout``).  Any other file is built with
    ``config``: bare state_dicts of older runs, the official ``pretrained_weights.pth`` (a plain
    state_dict) and braindecode's ``pytorch_model.bin`` (same names; its ``final_layer.*`` is
    dropped), read with ``weights_only=True``; ``module.``/``model.`` prefixes and
    ``{"state_dict": ...}`` wrappers are unwrapped.  Missing, unexpected or mis-shaped keys
    raise :class:`CheckpointError` naming them.
    """
    path = Path(source)
    if path.is_dir():
        if not (path / ENCODER_FILE).is_file():
            raise CheckpointError(f"{path} is a folder without {ENCODER_FILE} (not a pretraining run)")
        path = path / ENCODER_FILE
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state_dict")
    saved = saved_config(state)
    if saved is not None:
        conflicts = [
            f"{k}={config[k]!r} (saved {saved[k]!r})"
            for k in _SIZE_KEYS
            if k in config and k in saved and config[k] != saved[k]
        ]
        if conflicts:
            raise CheckpointError(
                f"{path} holds an encoder saved with its size; asked for another: "
                f"{', '.join(conflicts)} (leave the size out to use the saved one)"
            )
        config = {**saved, **config}
    state = _unwrap(state)
    model = CBraMod(**config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        f"{k} (file {tuple(state[k].shape)}, model {tuple(expected[k].shape)})"
        for k in set(state) & set(expected)
        if state[k].shape != expected[k].shape
    )
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
