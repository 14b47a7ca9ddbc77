"""The small built-in model catalog (pure data), taken from the reference's bundled catalog.

`model/list` shows these entries (the wire `Model` shape without `isDefault`) and, after them,
the configured `model` when the catalog does not know it; the effective config uses
`DEFAULT_MODEL` when nothing sets `model`.
"""

from __future__ import annotations

from typing import Any

DEFAULT_MODEL = "gpt-6.1-sol"

BUILTIN_MODELS: tuple[dict[str, Any], ...] = (
    {
        "id": "gpt-6.1-sol",
        "model": "gpt-6.1-sol",
        "upgrade": None,
        "upgradeInfo": None,
        "availabilityNux": {
            "message": (
                "Maximize usage with GPT-6.1 Sol. Try it on complex work for near-Astra "
                "performance at a lower cost."
            )
        },
        "displayName": "GPT-6.1-Sol",
        "description": "Latest workhorse model for coding and everyday work.",
        "modelSpecialty": None,
        "hidden": False,
        "supportedReasoningEfforts": [
            {"reasoningEffort": "low", "description": "Fast responses with lighter reasoning"},
            {
                "reasoningEffort": "medium",
                "description": "Balances speed and reasoning depth for everyday tasks",
            },
            {"reasoningEffort": "high", "description": "Greater reasoning depth for complex problems"},
            {"reasoningEffort": "xhigh", "description": "Extra high reasoning depth for complex problems"},
            {"reasoningEffort": "max", "description": "Maximum reasoning depth for the hardest problems"},
            {"reasoningEffort": "ultra", "description": "Maximum reasoning with automatic task delegation"},
        ],
        "defaultReasoningEffort": "low",
        "inputModalities": ["text", "image"],
        "supportsPersonality": False,
        "multiAgentVersion": "v2",
        "additionalSpeedTiers": ["fast"],
        "serviceTiers": [{"id": "priority", "name": "Fast", "description": "2x speed, increased usage"}],
        "defaultServiceTier": None,
        "availableAccessPrograms": None,
    },
    {
        "id": "gpt-6-astra",
        "model": "gpt-6-astra",
        "upgrade": None,
        "upgradeInfo": None,
        "availabilityNux": None,
        "displayName": "GPT-6-Astra",
        "description": "Frontier intelligence for the most demanding work.",
        "modelSpecialty": None,
        "hidden": False,
        "supportedReasoningEfforts": [
            {"reasoningEffort": "low", "description": "Fast responses with lighter reasoning"},
            {
                "reasoningEffort": "medium",
                "description": "Balances speed and reasoning depth for everyday tasks",
            },
            {"reasoningEffort": "high", "description": "Greater reasoning depth for complex problems"},
            {"reasoningEffort": "xhigh", "description": "Extra high reasoning depth for complex problems"},
            {"reasoningEffort": "max", "description": "Maximum reasoning depth for the hardest problems"},
            {"reasoningEffort": "ultra", "description": "Maximum reasoning with automatic task delegation"},
        ],
        "defaultReasoningEffort": "low",
        "inputModalities": ["text", "image"],
        "supportsPersonality": False,
        "multiAgentVersion": "v2",
        "additionalSpeedTiers": ["fast"],
        "serviceTiers": [{"id": "priority", "name": "Fast", "description": "2x speed, increased usage"}],
        "defaultServiceTier": None,
        "availableAccessPrograms": None,
    },
    {
        "id": "gpt-6-sol",
        "model": "gpt-6-sol",
        "upgrade": None,
        "upgradeInfo": None,
        "availabilityNux": None,
        "displayName": "GPT-6-Sol",
        "description": "Previous generation workhorse model.",
        "modelSpecialty": None,
        "hidden": False,
        "supportedReasoningEfforts": [
            {"reasoningEffort": "low", "description": "Fast responses with lighter reasoning"},
            {
                "reasoningEffort": "medium",
                "description": "Balances speed and reasoning depth for everyday tasks",
            },
            {"reasoningEffort": "high", "description": "Greater reasoning depth for complex problems"},
            {"reasoningEffort": "xhigh", "description": "Extra high reasoning depth for complex problems"},
            {"reasoningEffort": "max", "description": "Maximum reasoning depth for the hardest problems"},
            {"reasoningEffort": "ultra", "description": "Maximum reasoning with automatic task delegation"},
        ],
        "defaultReasoningEffort": "medium",
        "inputModalities": ["text", "image"],
        "supportsPersonality": False,
        "multiAgentVersion": "v2",
        "additionalSpeedTiers": ["fast"],
        "serviceTiers": [{"id": "priority", "name": "Fast", "description": "1.5x speed"}],
        "defaultServiceTier": "priority",
        "availableAccessPrograms": None,
    },
    {
        "id": "gpt-6-luna",
        "model": "gpt-6-luna",
        "upgrade": None,
        "upgradeInfo": None,
        "availabilityNux": None,
        "displayName": "GPT-6-Luna",
        "description": "Fast and affordable model for easier tasks.",
        "modelSpecialty": None,
        "hidden": False,
        "supportedReasoningEfforts": [
            {"reasoningEffort": "low", "description": "Fast responses with lighter reasoning"},
            {
                "reasoningEffort": "medium",
                "description": "Balances speed and reasoning depth for everyday tasks",
            },
            {"reasoningEffort": "high", "description": "Greater reasoning depth for complex problems"},
            {"reasoningEffort": "xhigh", "description": "Extra high reasoning depth for complex problems"},
            {"reasoningEffort": "max", "description": "Maximum reasoning depth for the hardest problems"},
        ],
        "defaultReasoningEffort": "medium",
        "inputModalities": ["text", "image"],
        "supportsPersonality": False,
        "multiAgentVersion": "v2",
        "additionalSpeedTiers": ["fast"],
        "serviceTiers": [{"id": "priority", "name": "Fast", "description": "1.5x speed"}],
        "defaultServiceTier": "priority",
        "availableAccessPrograms": None,
    },
    {
        "id": "gpt-5.5",
        "model": "gpt-5.5",
        "upgrade": "gpt-6-sol",
        "upgradeInfo": {
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
        "availabilityNux": None,
        "displayName": "GPT-5.5",
        "description": "Legacy coding model.",
        "modelSpecialty": None,
        "hidden": False,
        "supportedReasoningEfforts": [
            {"reasoningEffort": "low", "description": "Fast responses with lighter reasoning"},
            {
                "reasoningEffort": "medium",
                "description": "Balances speed and reasoning depth for everyday tasks",
            },
            {"reasoningEffort": "high", "description": "Greater reasoning depth for complex problems"},
            {"reasoningEffort": "xhigh", "description": "Extra high reasoning depth for complex problems"},
        ],
        "defaultReasoningEffort": "medium",
        "inputModalities": ["text", "image"],
        "supportsPersonality": False,
        "multiAgentVersion": None,
        "additionalSpeedTiers": ["fast"],
        "serviceTiers": [{"id": "priority", "name": "Fast", "description": "1.5x speed, increased usage"}],
        "defaultServiceTier": None,
        "availableAccessPrograms": None,
    },
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
