"""A parser for the objects Node.js prints with `util.inspect` (what `console.log` writes).

The Lambda logs its transactions this way: unquoted keys, single-quoted strings
(double quotes or backticks when the text holds a quote), `undefined`, trailing
commas, `[Object]` placeholders. JSON is a subset, so the JSON records parse too.
Numbers are returned as `JsNumber` holding the exact logged text, so money is
never routed through a binary float.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import polars as pl


class InspectError(ValueError):
    """The text is not a well-formed inspect object; `offset` says where it went wrong."""

    def __init__(self, message: str, offset: int):
        super().__init__(f"{message} at character {offset}")
        self.offset = offset


@dataclass(frozen=True)
class JsNumber:
    """A number as logged. `decimal()` is exact; `NaN`/`Infinity` have none."""

    text: str

    def decimal(self) -> Decimal | None:
        try:
            value = Decimal(self.text)
        except InvalidOperation:
            return None
        return value if value.is_finite() else None


class _Undefined:
    def __repr__(self) -> str:
        return "undefined"


UNDEFINED = _Undefined()


@dataclass(frozen=True)
class Placeholder:
    """What inspect prints instead of a value it did not expand: `[Object]`, `[Function: f]`."""

    text: str


#: Node never prints more than a few levels; a deeper text is hostile and refused before Python's stack ends.
MAX_DEPTH = 100
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "v": "\v", "0": "\0"}
_WORDS = {"true": True, "false": False, "null": None, "undefined": UNDEFINED}
_NUMBER_CHARS = set("0123456789+-.eE")
_BARE_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_$:.-+")


def parse_inspect(text: str):
    """Parse one inspect-printed value that makes up the whole of `text` (blank around it is fine)."""
    parser = _Parser(text)
    value = parser.value()
    parser.skip_blank()
    if parser.pos != len(text):
        raise InspectError("unexpected text after the value", parser.pos)
    return value


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.pos = 0
        self.depth = 0

    def skip_blank(self) -> None:
        text, pos = self.text, self.pos
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        self.pos = pos

    def peek(self) -> str:
        self.skip_blank()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def value(self):
        ch = self.peek()
        while ch == "<":  # `<ref *1> { ... }` marks a circular target
            end = self.text.find(">", self.pos)
            if end < 0:
                raise InspectError("unclosed <ref> marker", self.pos)
            self.pos = end + 1
            ch = self.peek()
        if not ch:
            raise InspectError("unexpected end of text", self.pos)
        if ch == "{":
            return self.object()
        if ch == "[":
            return self.array_or_placeholder()
        if ch in "'\"`":
            return self.string()
        if ch in "-+" or ch.isdigit():
            return self.number()
        return self.bare_word()

    def nested(self) -> None:
        """One level deeper; a hostile text nested beyond MAX_DEPTH is an error, not a crash of the stack."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise InspectError(f"nested deeper than {MAX_DEPTH} levels", self.pos)

    def object(self) -> dict:
        self.nested()
        self.pos += 1  # {
        result: dict = {}
        while True:
            ch = self.peek()
            if ch == "}":
                self.pos += 1
                self.depth -= 1
                return result
            if not ch:
                raise InspectError("object not closed", self.pos)
            if self.text.startswith("...", self.pos):  # `... 3 more items`
                self.skip_to_line_end()
                continue
            key = self.key()
            if self.peek() != ":":
                raise InspectError(f"expected ':' after key {key!r}", self.pos)
            self.pos += 1
            result[key] = self.value()
            self.separator("}")

    def array_or_placeholder(self):
        start = self.pos
        self.pos += 1  # [
        ch = self.peek()
        if ch.isalpha():  # [Object], [Array], [Function: name], [Circular *1]
            end = self.text.find("]", self.pos)
            if end < 0:
                raise InspectError("placeholder not closed", start)
            self.pos = end + 1
            return Placeholder(self.text[start : end + 1])
        result: list = []
        self.nested()
        while True:
            ch = self.peek()
            if ch == "]":
                self.pos += 1
                self.depth -= 1
                return result
            if not ch:
                raise InspectError("array not closed", start)
            if self.text.startswith("...", self.pos):
                self.skip_to_line_end()
                continue
            result.append(self.value())
            self.separator("]")

    def separator(self, closer: str) -> None:
        ch = self.peek()
        if ch == ",":
            self.pos += 1
        elif not ch:
            raise InspectError(f"{'object' if closer == '}' else 'array'} not closed", self.pos)
        elif ch != closer:
            raise InspectError(f"expected ',' or {closer!r}", self.pos)

    def skip_to_line_end(self) -> None:
        end = self.text.find("\n", self.pos)
        self.pos = len(self.text) if end < 0 else end

    def key(self) -> str:
        ch = self.peek()
        if ch in "'\"`":
            return self.string()
        start = self.pos
        text = self.text
        while self.pos < len(text) and (text[self.pos].isalnum() or text[self.pos] in "_$"):
            self.pos += 1
        if self.pos == start:
            raise InspectError("expected a key", start)
        return text[start : self.pos]

    def string(self) -> str:
        quote = self.text[self.pos]
        start = self.pos
        self.pos += 1
        parts: list[str] = []
        text = self.text
        while True:
            end = self.pos
            while end < len(text) and text[end] not in (quote, "\\"):
                end += 1
            parts.append(text[self.pos : end])
            if end >= len(text):
                raise InspectError("string not closed", start)
            if text[end] == quote:
                self.pos = end + 1
                return "".join(parts)
            parts.append(self.escape(end))

    def escape(self, at: int) -> str:
        text = self.text
        if at + 1 >= len(text):
            raise InspectError("string ends in a backslash", at)
        ch = text[at + 1]
        if ch == "u" and text[at + 2 : at + 3] == "{":  # \u{1F600}
            end = text.find("}", at)
            digits, self.pos = text[at + 3 : end], end + 1
        elif ch in "ux":
            width = 4 if ch == "u" else 2
            digits, self.pos = text[at + 2 : at + 2 + width], at + 2 + width
        else:
            self.pos = at + 2
            return _ESCAPES.get(ch, ch)
        try:
            return chr(int(digits, 16))
        except (ValueError, OverflowError):  # not hex, or beyond the last code point
            raise InspectError(f"bad \\{ch} escape", at) from None

    def number(self) -> JsNumber:
        start = self.pos
        text = self.text
        end = start
        while end < len(text) and text[end] in _NUMBER_CHARS:
            end += 1
        if text.startswith("Infinity", end):
            end += len("Infinity")
        token = text[start:end]
        self.pos = end
        number = JsNumber(token)
        if number.decimal() is None and token.lstrip("+-") != "Infinity":
            raise InspectError(f"bad number {token!r}", start)
        return number

    def bare_word(self):
        start = self.pos
        text = self.text
        end = start
        while end < len(text) and text[end] in _BARE_CHARS:
            end += 1
        word = text[start:end]
        if not word:
            raise InspectError(f"unexpected character {text[start]!r}", start)
        self.pos = end
        if word in _WORDS:
            return _WORDS[word]
        if word in ("NaN", "Infinity"):
            return JsNumber(word)
        return Placeholder(word)  # Symbol(x), Date printed bare, and the like


# -- the common shapes, column-wise ------------------------------------------------------------------

#: A value as Node prints the common cases: a string in single or double quotes whose escapes stand
#: for the character itself (`\\'`, `\\\\`), a plain decimal that fits Decimal(38, 18) exactly, or a
#: bare word `parse_inspect` reads the same way. Anything else is left to `parse_inspect`.
_PLAIN_ESCAPE = r"\\[^ntrbfv0ux\n]"
SIMPLE_VALUE = (rf"'(?:[^'\\\n]|{_PLAIN_ESCAPE})*'|\"(?:[^\"\\\n]|{_PLAIN_ESCAPE})*\""
                r"|-?(?:0|[1-9][0-9]{0,19})(?:\.[0-9]{1,18})?|true|false|undefined|null")
SIMPLE_KEY = r"[A-Za-z0-9_$]+"


def flat_fields(texts: pl.Series, opening: str, closing: str, indent: int,
                shapes: tuple[tuple[str, ...], ...] = ()) -> pl.DataFrame:
    """The members of flat objects printed one per line, as each value's printed text; a row per text.

    A text counts as simple when it is exactly `opening`, then lines of
    `<indent spaces>key: value,` (no comma after the last), then `closing`
    (regex fragments), with every value a `SIMPLE_VALUE`: then `parse_inspect`
    would read the same members. Texts whose keys come in one of the `shapes`
    (the orders Node prints) are cut line by line; other simple texts member by
    member. Columns: `simple`, and one column per key seen with the value as
    printed (a repeated key keeps its last value, as `parse_inspect` does); null
    when the key is absent or the text is not simple. `printed_string` and
    `printed_number` read the values.
    """
    pad = " " * indent
    value = f"(?:{SIMPLE_VALUE})"
    skip = opening.count("\\n")  # lines before the first member
    frame = pl.DataFrame({"text": texts}).with_row_index("row").with_columns(shaped=pl.lit(False))
    cut: list[pl.DataFrame] = []
    for keys in shapes:
        shape = f"^{opening}" + ",\n".join(f"{pad}{key}: {value}" for key in keys) + f"\n{closing}$"
        frame = frame.with_columns(fits=pl.when(~pl.col("shaped")).then(pl.col("text")).str.contains(shape)
                                   .fill_null(False))
        lines = frame.filter("fits").select("row", lines=pl.col("text").str.split("\n"))
        cut.append(lines.select("row", *[
            pl.col("lines").list.get(skip + i).str.slice(indent + len(key) + 2).str.strip_suffix(",").alias(key)
            for i, key in enumerate(keys)]))
        frame = frame.with_columns(shaped=pl.col("shaped") | pl.col("fits"))
    member = f"{pad}{SIMPLE_KEY}: {value}"
    unshaped = pl.when(~pl.col("shaped")).then(pl.col("text"))  # only texts in no known shape are tried whole
    frame = frame.with_columns(other=unshaped.str.contains(f"^{opening}(?:{member},\n)*{member}\n{closing}$")
                               .fill_null(False)).with_columns(simple=pl.col("shaped") | pl.col("other"))
    rest = frame.filter("other")
    wide = pl.concat([*cut, _member_by_member(rest, pad)], how="diagonal")
    return frame.select("row", "simple").join(wide, on="row", how="left", maintain_order="left")


def _member_by_member(simple: pl.DataFrame, pad: str) -> pl.DataFrame:
    # once the whole text matched, a line starting with the indent is exactly one member
    pairs = (simple.select("row", line=pl.col("text").str.split("\n"))
             .explode("line")
             .filter(pl.col("line").str.starts_with(pad) & ~pl.col("line").str.starts_with(pad + " "))
             .select("row", parts=pl.col("line").str.slice(len(pad)).str.splitn(": ", 2))
             .unnest("parts")
             .select("row", key="field_0", printed=pl.col("field_1").str.strip_suffix(","))
             .unique(["row", "key"], keep="last"))
    if pairs.height == 0:
        return simple.select("row")
    return pairs.pivot(on="key", index="row", values="printed")


def printed_string(printed: pl.Series) -> pl.Series:
    """The string a quoted `SIMPLE_VALUE` stands for; null for any other value."""
    quoted = printed.str.starts_with("'") | printed.str.starts_with('"')
    inner = pl.select(pl.when(quoted).then(printed.str.slice(1).str.head(-1))).to_series()
    escaped = inner.str.contains("\\", literal=True).fill_null(False).arg_true()
    if len(escaped):  # rare: undo them apart
        inner = inner.scatter(escaped, inner.gather(escaped).str.replace_all(r"\\(.)", "${1}"))
    return inner


def printed_number(printed: pl.Series) -> pl.Series:
    """The exact number an unquoted `SIMPLE_VALUE` stands for; null for any other value."""
    return printed.cast(pl.Decimal(38, 18), strict=False)
