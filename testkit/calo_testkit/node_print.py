"""Values printed as the Node.js Lambda prints them: ``console.log`` (util.inspect) and ``JSON.stringify``.

Why one module: the generator and the tests' small log builder must write the
same text the real logs hold, so the product's parser (``calo_assets.node_inspect``)
is tested against one printer, not two that drift apart.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal


class Raw(str):
    """Text util.inspect prints bare, such as ``undefined``, ``[Object]`` or a number exactly as logged."""


UNDEFINED = Raw("undefined")
_ESCAPE = re.compile(r"[\x00-\x1f\\\x7f-\x9f]")
_ESCAPE_SINGLE = re.compile(r"[\x00-\x1f'\\\x7f-\x9f]")
_META = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\x0b": "\\x0B", "\f": "\\f", "\r": "\\r", "\\": "\\\\", "'": "\\'"}


def _escape_char(match: re.Match) -> str:
    char = match.group()
    return _META.get(char) or f"\\x{ord(char):02X}"


def js_number(value: Decimal | int) -> str:
    """Print a number as JavaScript's ``String(number)`` does.

    Why: the logs hold JavaScript numbers, so ints print without ``.0`` and
    decimals in their shortest round-trip form (``60.181000000000004`` stays).
    """
    if isinstance(value, int):
        return str(value)
    number = float(value)
    if number.is_integer():
        return str(int(number))
    text = repr(number)
    return format(Decimal(text), "f") if "e" in text else text


def js_string(text: str) -> str:
    """Quote a string as util.inspect does: single quotes unless the text holds one.

    A ``'`` switches to double quotes, or to backticks when ``"`` is there too
    (JSON metadata); backslashes and control characters are escaped.
    """
    quote, pattern = "'", _ESCAPE_SINGLE
    if "'" in text:
        if '"' not in text:
            quote, pattern = '"', _ESCAPE
        elif "`" not in text and "${" not in text:
            quote, pattern = "`", _ESCAPE
    if pattern.search(text):
        text = pattern.sub(_escape_char, text)
    return f"{quote}{text}{quote}"


def inspect(value: object, indent: int = 0) -> str:
    """Render a value as Node's ``console.log`` does (util.inspect, breakLength 80)."""
    kind = type(value)  # exact types: Raw and bool must not pass for str and int
    if kind is str:
        return js_string(value)
    if kind is Decimal or kind is int:
        return js_number(value)
    if kind is dict:
        scalars = SCALARS  # most values are scalars: render them without recursing
        entries = [f"{key}: {scalars[type(item)](item)}" if type(item) in scalars else
                   f"{key}: {inspect(item, indent + 2)}" for key, item in value.items()]
        return _reduce(entries, indent, "{", "}")
    if kind is Raw:
        return str(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is list:
        return _reduce([inspect(item, indent + 2) for item in value], indent, "[", "]")
    raise TypeError(f"cannot inspect {kind.__name__}")


#: The printers of the scalar types, for callers that render many values without recursing.
SCALARS = {str: js_string, Decimal: js_number, int: js_number}


def _reduce(entries: list[str], indent: int, opening: str, closing: str) -> str:
    """Join entries on one line when Node would (its ``reduceToSingleString``), else one per line."""
    if not entries:
        return opening + closing
    total = 2 * len(entries) + indent + len(opening) + 10
    for entry in entries:
        total += len(entry)
        if total > 80 or "\n" in entry:
            break
    else:
        return f"{opening} {', '.join(entries)} {closing}"
    pad = "\n" + " " * (indent + 2)
    return f"{opening}{pad}{(',' + pad).join(entries)}\n{' ' * indent}{closing}"


def stringify(value: object) -> str:
    """JSON.stringify: compact, UTF-8 kept, numbers printed as JavaScript does."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (Decimal, int)):
        return js_number(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(key)}:{stringify(item)}" for key, item in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(stringify(item) for item in value) + "]"
    if value is None:
        return "null"
    raise TypeError(f"cannot serialise {type(value).__name__}")
