"""What ``config explain`` shows: rows for a table and a stable JSON document (pure).

Values that a secret contributed to are masked (``****``) unless the caller asks to reveal them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from egressmail.config.resolve import ResolutionWarning, ResolvedConfiguration, ResolvedProperty

__all__ = ["JSON_SCHEMA_VERSION", "explain_document", "format_value", "property_rows", "source_text"]

#: bumped when the JSON shape changes incompatibly
JSON_SCHEMA_VERSION = 1


def format_value(value: Any) -> str:
    """A value as one line: text as it is, everything else as JSON (``true``, ``[1, 2]``)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def source_text(prop: ResolvedProperty) -> str:
    """Where a value came from, e.g. ``default of env:AEM_PROXY_HOST``."""
    parts = [p.describe() for p in prop.provenance]
    parts.extend(f"unresolved {placeholder}" for placeholder in prop.unresolved)
    return ", ".join(parts) or "literal"


def property_rows(config: ResolvedConfiguration, *, reveal: bool = False) -> list[tuple[str, str, str, str]]:
    """(property, value, type, source) for every property, in file order."""
    return [(p.name, format_value(p.display_value(reveal=reveal)), p.type_name, source_text(p))
            for p in config.properties.values()]


def _warning_json(w: ResolutionWarning) -> dict[str, Any]:
    item: dict[str, Any] = {"code": w.code, "property": w.property, "message": w.message,
                            "blocking": w.blocking}
    if w.placeholder:
        item["placeholder"] = w.placeholder
    return item


def explain_document(configs: Sequence[ResolvedConfiguration], *, reveal: bool = False,
                     strict: bool = False) -> dict[str, Any]:
    """The ``--json`` document: configurations sorted by PID, properties in file order.

    ``ok`` is false when ``strict`` and a blocking warning exists.
    """
    out_configs = []
    blocking = False
    for config in sorted(configs, key=lambda c: c.pid or ""):
        props = []
        for p in config.properties.values():
            props.append({
                "name": p.name,
                "value": p.display_value(reveal=reveal),
                "type": p.type_name,
                "python_type": p.python_type,
                "secret": p.is_secret,
                "sources": [{"kind": s.kind, "name": s.name, "origin": s.origin} for s in p.provenance],
                "warnings": [_warning_json(w) for w in p.warnings],
            })
        blocking = blocking or config.has_blocking_warnings
        out_configs.append({
            "pid": config.pid,
            "file": str(config.path) if config.path else None,
            "properties": props,
        })
    warnings = [_warning_json(w) | {"pid": c.pid} for c in sorted(configs, key=lambda c: c.pid or "")
                for w in c.warnings]
    return {
        "version": JSON_SCHEMA_VERSION,
        "ok": not (strict and blocking),
        "configurations": out_configs,
        "warnings": warnings,
    }
