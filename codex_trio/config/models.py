"""The built-in model catalog (pure data), taken from the reference's bundled catalog.

`model/list` shows these entries (the wire `Model` shape without `isDefault`) and, after them,
the configured `model` when the catalog does not know it; the effective config uses
`DEFAULT_MODEL` when nothing sets `model`.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

DEFAULT_MODEL = "gpt-6.1-sol"


@functools.cache
def builtin_models() -> tuple[dict[str, Any], ...]:
    """The reference's bundled catalog (`model_catalog.json`, its `model/list` entries in its
    order, without `isDefault`); read on first use so a cold start does not pay for it."""
    text = resources.files(__package__).joinpath("model_catalog.json").read_text(encoding="utf-8")
    return tuple(json.loads(text))


def configured_model_entry(model: str) -> dict[str, Any]:
    """A catalog entry for a configured model the catalog does not know: no claims about it."""
    return {
        "id": model,
        "model": model,
        "upgrade": None,
        "upgradeInfo": None,
        "availabilityNux": None,
        "displayName": model,
        "description": "Configured model",
        "modelSpecialty": None,
        "hidden": False,
        "supportedReasoningEfforts": [],
        "defaultReasoningEffort": None,
        "inputModalities": ["text"],
        "supportsPersonality": False,
        "multiAgentVersion": None,
        "additionalSpeedTiers": [],
        "serviceTiers": [],
        "defaultServiceTier": None,
        "availableAccessPrograms": None,
    }
