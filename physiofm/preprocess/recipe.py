"""Declarative preprocessing recipes (TOML under ``manifests/recipes/``) and their hashes."""

from __future__ import annotations

import copy
import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent.parent


def manifests_dir() -> Path:
    """The ``manifests/`` folder: packaged with a wheel, or beside the package in a checkout."""
    packaged = PACKAGE_DIR / "_manifests"
    return packaged if packaged.is_dir() else PACKAGE_DIR.parent / "manifests"


def merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_recipe(name_or_path: str | Path, overrides: dict | None = None) -> dict[str, Any]:
    """Load a recipe by name (``manifests/recipes/NAME.toml``) or path, resolving ``extends``."""
    path = Path(name_or_path)
    if not path.suffix:
        path = manifests_dir() / "recipes" / f"{name_or_path}.toml"
    if not path.is_file():
        raise FileNotFoundError(f"no recipe {name_or_path!r} (looked for {path})")
    with open(path, "rb") as handle:
        recipe = tomllib.load(handle)
    parent = recipe.pop("extends", None)
    if parent:
        recipe = merge(load_recipe(parent), recipe)
    return merge(recipe, overrides or {})


def recipe_hash(recipe: dict) -> str:
    """SHA-256 of the recipe's canonical JSON: the identity of what a build computes."""
    canonical = json.dumps(recipe, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
