"""Tool definitions a system sends with every request, read from a user's JSON file or text.

The format is OpenAI's chat-completions `tools` list, which litellm translates for other providers:
`[{"type": "function", "function": {"name", "description", "parameters": JSON Schema}}]`. Checked
strictly before anything is sent: a typo such as `"parameter"` would otherwise reach the provider
as a tool without arguments, or be refused there once per case. Errors name the source and the
entry's path (`[2].function.name`, entries counted from 0).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from lib.errors import FileInputError

NAME_RULE = re.compile(r"[A-Za-z0-9_-]{1,64}")  # OpenAI's rule for function names
ENTRY_KEYS = ("type", "function", "cache_control")  # cache_control: litellm's Anthropic prompt caching
FUNCTION_KEYS = ("name", "description", "parameters", "strict")


class ToolsFileError(FileInputError):
    """A tools file or text is not a valid list of OpenAI-style tool definitions."""

    def __init__(self, source: str, message: str, *, entry: int | None = None, field: str | None = None,
                 line: int | None = None) -> None:
        path = field if entry is None else f"[{entry}]" + (f".{field}" if field else "")
        super().__init__(source, message, line=line, field=path)


def load_tools(path: str | Path) -> list[dict[str, Any]]:
    """The tool definitions in a JSON file (ToolsFileError when unreadable or invalid)."""
    source = str(path)
    try:
        content = Path(path).read_bytes()
    except FileNotFoundError:
        raise ToolsFileError(source, "no such file") from None
    except IsADirectoryError:
        raise ToolsFileError(source, "is a directory, not a file") from None
    except OSError as exc:
        raise ToolsFileError(source, f"cannot be read: {exc.strerror or exc}") from None
    return parse_tools(content, source)


def parse_tools(content: str | bytes, source: str) -> list[dict[str, Any]]:
    """The tool definitions in JSON text; `source` names it in errors (a file name, "tools text")."""
    if isinstance(content, bytes):
        try:
            content = content.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ToolsFileError(source, "is not UTF-8 text") from None
    try:
        tools = json.loads(content)
    except json.JSONDecodeError as exc:
        raise ToolsFileError(source, f"is not JSON: {exc.msg} (column {exc.colno})", line=exc.lineno) from None
    if not isinstance(tools, list):
        raise ToolsFileError(source, f"must be a JSON list of tool definitions, not {_kind(tools)}")
    if not tools:
        raise ToolsFileError(source, "is an empty list (providers refuse `tools: []`; give no tools instead)")
    first_of: dict[str, int] = {}
    for index, entry in enumerate(tools):
        name = _check_entry(entry, index, source)
        if name in first_of:
            raise ToolsFileError(source, f"repeats '{name}', the name of entry [{first_of[name]}]",
                                 entry=index, field="function.name")
        first_of[name] = index
    return tools


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")


def _check_entry(entry: Any, index: int, source: str) -> str:
    """Check one tool definition; returns its function name."""
    if not isinstance(entry, dict):
        raise ToolsFileError(source, f"must be an object, not {_kind(entry)}", entry=index)
    if entry.get("type") != "function":
        got = "is missing" if "type" not in entry else f"is {json.dumps(entry['type'])[:40]}"
        raise ToolsFileError(source, f"must be \"function\" (it {got})", entry=index, field="type")
    function = entry.get("function")
    if not isinstance(function, dict):
        hint = (": wrap name, description and parameters in \"function\" (this looks like the Responses-API "
                "format)" if "name" in entry else "")
        raise ToolsFileError(source, f"must be an object with the function's name and parameters{hint}",
                             entry=index, field="function")
    _no_unknown_keys(entry, ENTRY_KEYS, index, source, "")
    _no_unknown_keys(function, FUNCTION_KEYS, index, source, "function.")
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise ToolsFileError(source, "is required (a non-empty string)", entry=index, field="function.name")
    if not NAME_RULE.fullmatch(name):
        raise ToolsFileError(source, f"must be 1-64 letters, digits, '_' or '-' (got {json.dumps(name)[:80]})",
                             entry=index, field="function.name")
    if "description" in function and not isinstance(function["description"], str):
        raise ToolsFileError(source, "must be a string", entry=index, field="function.description")
    if "strict" in function and not isinstance(function["strict"], bool):
        raise ToolsFileError(source, "must be true or false", entry=index, field="function.strict")
    if "parameters" in function:
        _check_parameters(function["parameters"], index, source)
    return name


def _no_unknown_keys(obj: dict[str, Any], known: tuple[str, ...], index: int, source: str, prefix: str) -> None:
    unknown = sorted(set(obj) - set(known))
    if unknown:
        raise ToolsFileError(source, f"is not a known key (known: {', '.join(known)})",
                             entry=index, field=prefix + str(unknown[0]))


def _check_parameters(schema: Any, index: int, source: str) -> None:
    """The arguments' JSON Schema: an object schema (what providers accept), and a valid schema."""
    from jsonschema.exceptions import SchemaError  # imported on use: `run` starts without it otherwise
    from jsonschema.validators import validator_for

    field = "function.parameters"
    if not isinstance(schema, dict):
        raise ToolsFileError(source, f"must be a JSON Schema object, not {_kind(schema)}", entry=index, field=field)
    if schema.get("type") != "object":
        raise ToolsFileError(source, "must describe an object (\"type\": \"object\"), as providers require",
                             entry=index, field=field)
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in exc.path)
        raise ToolsFileError(source, f"is not a valid JSON Schema: {exc.message[:200]}",
                             entry=index, field=field + where) from None
