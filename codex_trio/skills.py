"""SKILL.md files: the skills `skills/list` reports (user, repo, system) and plugins bring.

A leaf: reads files, imports nothing of ours. Blocking; callers run it in worker threads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

#: skills listed per root at most; a skills folder is small, this only bounds a stray one.
MAX_SKILLS_PER_ROOT = 200
#: how deep below a skills root a SKILL.md is looked for.
SKILL_DEPTH = 3


def _frontmatter(text: str) -> dict[str, str]:
    """`key: value` lines of a leading `---` block (the SKILL.md header); quotes stripped."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        return {}
    fields: dict[str, str] = {}
    for line in lines[1:]:
        if line.strip() == "---":
            break
        key, sep, value = line.partition(":")
        nested = key.startswith((" ", "\t"))
        if sep and key and (not nested or key.strip() == "short-description"):
            fields[key.strip()] = value.strip().strip("\"'")
    return fields


#: `agents/openai.yaml` interface keys and their wire names.
_INTERFACE_KEYS = {
    "display_name": "displayName",
    "short_description": "shortDescription",
    "icon_small": "iconSmall",
    "icon_large": "iconLarge",
    "brand_color": "brandColor",
    "default_prompt": "defaultPrompt",
}


def _interface(skill_dir: Path) -> dict[str, Any] | None:
    """The `interface:` block of a skill's `agents/openai.yaml` (flat `key: "value"` lines)."""
    try:
        text = (skill_dir / "agents" / "openai.yaml").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    values: dict[str, str] = {}
    inside = False
    for line in text.splitlines():
        if not line.startswith((" ", "\t")):
            inside = line.strip() == "interface:"
            continue
        key, sep, value = line.strip().partition(":")
        if inside and sep and key in _INTERFACE_KEYS:
            values[key] = value.strip().strip("\"'")
    if not values:
        return None
    wire: dict[str, Any] = {name: None for name in _INTERFACE_KEYS.values()}
    wire.update({"iconSmallUrl": None, "iconLargeUrl": None})
    for key, value in values.items():
        if key.startswith("icon_"):
            value = str((skill_dir / value).resolve())
        wire[_INTERFACE_KEYS[key]] = value
    order = ("displayName", "shortDescription", "iconSmall", "iconLarge", "iconSmallUrl", "iconLargeUrl")
    return {k: wire[k] for k in (*order, "brandColor", "defaultPrompt")}


def scan_skills(root: Path, scope: str) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """SKILL.md files under `root` (blocking): skills and the files that did not parse."""
    skills: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    if not root.is_dir():
        return skills, errors
    base_depth = len(root.parts)
    for dirpath, dirnames, filenames in os.walk(root):
        if len(Path(dirpath).parts) - base_depth >= SKILL_DEPTH:
            dirnames.clear()
        dirnames.sort()
        if "SKILL.md" not in filenames:
            continue
        path = Path(dirpath) / "SKILL.md"
        try:
            meta = _frontmatter(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            errors.append({"path": str(path), "message": str(exc)})
            continue
        if not meta.get("name") or not meta.get("description"):
            errors.append({"path": str(path), "message": "missing `name` or `description` in front matter"})
            continue
        skill_scope = "system" if ".system" in Path(dirpath).relative_to(root).parts else scope
        skills.append({
            "name": meta["name"],
            "description": meta["description"],
            "shortDescription": meta.get("short_description") or meta.get("short-description"),
            "interface": _interface(Path(dirpath)),
            "dependencies": None,
            "path": str(path),
            "scope": skill_scope,
            "enabled": True,
            "pluginId": None,
        })
        if len(skills) >= MAX_SKILLS_PER_ROOT:
            break
    return skills, errors
