"""The small built-in model catalog (pure data), taken from the reference's bundled catalog.

`model/list` shows these entries (the wire `Model` shape without `isDefault`) and, after them,
the configured `model` when the catalog does not know it; the effective config uses
`DEFAULT_MODEL` when nothing sets `model`.
"""

from __future__ import annotations

from typing import Any

DEFAULT_MODEL = "gpt-6.1-sol"

#: Every reasoning effort the catalog knows, strongest last; a model supports a prefix of it.
_REASONING_EFFORTS: tuple[tuple[str, str], ...] = (
    ("low", "Fast responses with lighter reasoning"),
    ("medium", "Balances speed and reasoning depth for everyday tasks"),
    ("high", "Greater reasoning depth for complex problems"),
    ("xhigh", "Extra high reasoning depth for complex problems"),
    ("max", "Maximum reasoning depth for the hardest problems"),
    ("ultra", "Maximum reasoning with automatic task delegation"),
)


def _entry(
    name: str,
    display_name: str,
    description: str,
    *,
    strongest_effort: str,
    default_effort: str,
    fast_tier: str,
    default_service_tier: str | None = None,
    multi_agent_version: str | None = "v2",
    upgrade: str | None = None,
    upgrade_info: dict[str, Any] | None = None,
    availability_nux: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One catalog entry in the wire key order; efforts run from `low` up to `strongest_effort`."""
    names = [effort for effort, _ in _REASONING_EFFORTS]
    efforts = _REASONING_EFFORTS[: names.index(strongest_effort) + 1]
    return {
        "id": name,
        "model": name,
        "upgrade": upgrade,
        "upgradeInfo": upgrade_info,
        "availabilityNux": availability_nux,
        "displayName": display_name,
        "description": description,
        "modelSpecialty": None,
        "hidden": False,
        "supportedReasoningEfforts": [
            {"reasoningEffort": effort, "description": text} for effort, text in efforts
        ],
        "defaultReasoningEffort": default_effort,
        "inputModalities": ["text", "image"],
        "supportsPersonality": False,
        "multiAgentVersion": multi_agent_version,
        "additionalSpeedTiers": ["fast"],
        "serviceTiers": [{"id": "priority", "name": "Fast", "description": fast_tier}],
        "defaultServiceTier": default_service_tier,
        "availableAccessPrograms": None,
    }


BUILTIN_MODELS: tuple[dict[str, Any], ...] = (
    _entry(
        "gpt-6.1-sol",
        "GPT-6.1-Sol",
        "Latest workhorse model for coding and everyday work.",
        availability_nux={
            "message": (
                "Maximize usage with GPT-6.1 Sol. Try it on complex work for near-Astra "
                "performance at a lower cost."
            )
        },
        strongest_effort="ultra",
        default_effort="low",
        fast_tier="2x speed, increased usage",
    ),
    _entry(
        "gpt-6-astra",
        "GPT-6-Astra",
        "Frontier intelligence for the most demanding work.",
        strongest_effort="ultra",
        default_effort="low",
        fast_tier="2x speed, increased usage",
    ),
    _entry(
        "gpt-6-sol",
        "GPT-6-Sol",
        "Previous generation workhorse model.",
        strongest_effort="ultra",
        default_effort="medium",
        fast_tier="1.5x speed",
        default_service_tier="priority",
    ),
    _entry(
        "gpt-6-luna",
        "GPT-6-Luna",
        "Fast and affordable model for easier tasks.",
        strongest_effort="max",
        default_effort="medium",
        fast_tier="1.5x speed",
        default_service_tier="priority",
    ),
    _entry(
        "gpt-5.5",
        "GPT-5.5",
        "Legacy coding model.",
        upgrade="gpt-6-sol",
        upgrade_info={
            "model": "gpt-6-sol",
            "upgradeCopy": None,
            "modelLink": None,
            "migrationMarkdown": (
                "Meet GPT-6 Sol\n\nOur latest Sol is more intelligent and more efficient so your "
                "usage limits go further. This model is a great daily driver for complex tasks, "
                "especially coding.\n"
            ),
            "retirementAt": None,
        },
        strongest_effort="xhigh",
        default_effort="medium",
        fast_tier="1.5x speed, increased usage",
        multi_agent_version=None,
    ),
)


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
