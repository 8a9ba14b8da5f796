"""The auditor view: the same report files with every user id replaced by a keyed hash.

A pseudonym is `u_` + the first 16 hex digits of HMAC-SHA256(key, user id): the
same user gets the same pseudonym in every file and every version (rows still
join), and without the key nobody can test a guessed id against it.

The raw ids of a version are collected from its workbook (the `userId` column
of every sheet, and ids quoted after `userId` in any text) and from its CSV's
`userId` column; then every text of the workbook (cells, hyperlinks, comments),
the CSV and the HTML has each of them replaced, in every form the reports write
them, wherever it appears (also inside details and explanations). Longer ids are matched first, so an id
that is a prefix of another never leaves a tail behind. Results are cached per
(version, file, source sha256, key) so only the first download pays.

The workbook is read and rewritten as XML text by the module that writes it
(`reports.xlsx`), part by part: no cell object is built and a large workbook is
never loaded whole; numbers, styles and layout are copied as they are.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import html
import json
import re
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from markupsafe import escape

from calo_assets.atomic import new_file
from calo_assets.downloads.versions import Version
from calo_assets.reports import xlsx
from calo_assets.reports.safe_text import looks_like_formula

USER_ID_COLUMN = "userId"
#: `userId: 'x'` (Node's inspect), `"userId":"x"` (JSON), `\"userId\":\"x\"` (JSON inside a JSON string).
USER_ID_IN_TEXT = re.compile(r"""userId\\?["']?\s*[:=]\s*\\?["']([^"'\\\s]+)""")


def pseudonym(key: bytes, user_id: str) -> str:
    return "u_" + hmac.new(key, user_id.encode(), hashlib.sha256).hexdigest()[:16]


def ids_from_csv(path: Path) -> set[str]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = csv.reader(fh)
        header = next(rows, [])
        columns = [i for i, name in enumerate(header) if name == USER_ID_COLUMN]
        return {_as_logged(row[i]) for row in rows for i in columns if i < len(row) and row[i]}


def _as_logged(text: str) -> str:
    """A CSV value without the `'` that neutralises formula-like text (the workbook holds it without)."""
    return text[1:] if text.startswith("'") and looks_like_formula(text[1:]) else text


def ids_from_xlsx(path: Path) -> set[str]:
    """The values under every `userId` header of every sheet (Ledger, ByUser, Overdrafts, ...), and ids
    quoted after `userId` in any text (log excerpts of rejected blocks name users no column has)."""
    ids = set()
    for text, in_column in xlsx.find_texts(path, under=USER_ID_COLUMN, containing=USER_ID_COLUMN):
        if in_column:
            ids.add(text)
        if USER_ID_COLUMN in text:
            ids.update(USER_ID_IN_TEXT.findall(text))
    return ids


def _written_forms(raw: str) -> set[str]:
    """Every form a report writes an id in: as is, HTML-escaped (Jinja's and Python's ways, quotes or not),
    each of those as JSON inside a <script> element (`<`, `>`, `&` as \\u escapes), and, for an id a
    spreadsheet would run as a formula, with the CSV's neutralising `'` (the pseudonym needs none)."""
    texts = {raw, html.escape(raw), html.escape(raw, quote=False), str(escape(raw))}
    in_script = {json.dumps(t, ensure_ascii=False)[1:-1].replace("<", "\\u003c").replace(">", "\\u003e")
                 .replace("&", "\\u0026") for t in texts}
    return texts | in_script | ({"'" + raw} if looks_like_formula(raw) else set())


class Replacer:
    """Replaces each raw id, in every form it is written in, by its pseudonym in one regex pass per text."""

    def __init__(self, key: bytes, ids: Iterable[str]):
        table = {}
        for raw in ids:
            alias = pseudonym(key, raw)
            table.update(dict.fromkeys(_written_forms(raw), alias))
        self.table = table  # every written form of every id -> its pseudonym
        self._pattern = re.compile(_trie(table)) if table else None

    def __call__(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(lambda m: self.table[m.group(0)], text)


def _trie(words: Iterable[str]) -> str:
    """A regex matching any of `words`, longest first, as a trie: each position costs one id's length,
    not one try per id (a plain alternation of 10,000 ids would make a large HTML take minutes)."""
    root: dict = {}
    for word in words:
        node = root
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def pattern(node: dict) -> str:
        branches = [re.escape(ch) + pattern(child) for ch, child in sorted(node.items()) if ch]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body  # greedy: the longer id wins when both match

    return pattern(root)


def _rewrite_xlsx(source: Path, target: Path, replace: Replacer) -> None:
    """Every text of the workbook rewritten in its XML, a block of rows at a time (see `reports.xlsx`)."""
    xlsx.rewrite_texts(source, target, replace.table)


def _rewrite_text(source: Path, target: Path, replace: Replacer) -> None:
    """Line by line, so a large CSV never has to fit in memory (an id never spans lines)."""
    with open(source, encoding="utf-8", newline="") as src, open(target, "w", encoding="utf-8", newline="") as out:
        for line in src:
            out.write(replace(line))


REWRITERS: dict[str, Callable[[Path, Path, Replacer], None]] = {
    "report.xlsx": _rewrite_xlsx, "report.html": _rewrite_text, "raw_parsed.csv": _rewrite_text}


class Pseudonymiser:
    """Pseudonymised copies of a version's files, made once and kept under `cache_dir`.

    The id matcher of the last few versions is kept in memory: with many users it
    takes seconds to build, and the three files of a version share it.
    """

    REPLACERS_KEPT = 4

    def __init__(self, key: str, cache_dir: Path):
        self._key = key.encode()
        # The key's fingerprint is part of the cache path: a new key never serves files made with the old one.
        self._cache = cache_dir / pseudonym(self._key, "cache")[2:]
        self._replacers: dict[int, Replacer] = {}
        self._locks: dict[int, threading.Lock] = {}
        self._guard = threading.Lock()

    def file(self, version: Version, name: str) -> Path:
        """The pseudonymised copy of `version.files[name]` (whose files the caller has verified)."""
        source = version.files[name]
        target = self._cache / str(version.storage_id) / f"{source.sha256[:16]}-{name}"
        if target.is_file():
            return target
        with self._lock(version.storage_id):
            if not target.is_file():
                with new_file(target) as tmp:
                    REWRITERS[name](source.path, tmp, self._replacer(version))
        return target

    @staticmethod
    def raw_ids(version: Version) -> set[str]:
        """Raises LookupError when the version has neither workbook nor CSV: no way to know its ids."""
        if "report.xlsx" not in version.files and "raw_parsed.csv" not in version.files:
            raise LookupError("this version has neither report.xlsx nor raw_parsed.csv to collect user ids from")
        ids = set()
        if "report.xlsx" in version.files:
            ids |= ids_from_xlsx(version.files["report.xlsx"].path)
        if "raw_parsed.csv" in version.files:
            ids |= ids_from_csv(version.files["raw_parsed.csv"].path)
        return ids

    def _replacer(self, version: Version) -> Replacer:
        with self._guard:
            replacer = self._replacers.get(version.storage_id)
        if replacer is None:
            replacer = Replacer(self._key, self.raw_ids(version))
            with self._guard:
                self._replacers[version.storage_id] = replacer
                while len(self._replacers) > self.REPLACERS_KEPT:
                    del self._replacers[next(iter(self._replacers))]
        return replacer

    def _lock(self, storage_id: int) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(storage_id, threading.Lock())
