"""Deterministic generator of realistic balance-sync log exports.

Why it exists: the product reads CloudWatch exports of the Node.js Lambda that
syncs wallet balances, and every figure it reports must be checkable. Real
exports cannot be shipped or enlarged, so this module writes exports with the
same layout and framing as the real ones (see ``shared/log-format.md``) and, next
to them, a :class:`GroundTruth` that says exactly what a correct reader must
find: how many transaction blocks, their outcomes, every record kind, every file
and every injected fault with its transaction ids and file.

Design, in the order data takes it:

* money is :class:`decimal.Decimal` all the way and is printed the way
  JavaScript prints numbers; objects are printed the way Node's ``util.inspect``
  prints them (``calo_testkit.node_print``, shared with the tests' log builder),
  because a parser keyed to that text is what the product ships;
* users carry one currency and a continuous balance chain; clean amounts follow
  a low-discrepancy sequence around each user's usual amount, so clean data
  holds no accidental outliers, bursts, rapid deductions or breaks;
* invocations (START..END, 1-12 SQS messages each) are generated in time order
  and dealt to a few concurrent log streams, one file per stream, so files
  overlap in time; a stream is written out as soon as it closes, which keeps
  memory flat from a few hundred to millions of transactions;
* faults and rare record kinds are scheduled at stratified positions of the
  transaction count and fired when their preconditions hold (typed shape, an
  eligible user), with their blocks reserved in advance so the export holds
  exactly ``transactions`` parseable blocks.

Same seed and arguments give byte-identical output: one ``random.Random(seed)``,
no clock, no hash ordering, gzip with ``mtime=0`` and no file name.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import heapq
import json
import math
import random
import struct
import time
from collections import Counter
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path
from typing import Callable

from calo_testkit.node_print import SCALARS, UNDEFINED, Raw, inspect, js_number, stringify

FAULT_KINDS = (
    "balance_mismatch",
    "continuity_break",
    "overdraft",
    "repeat_delivery",
    "invalid_action",
    "burst",
    "rapid_manual_deduction",
    "duplicate_tx_id",
    "mad_spike",
    "out_of_sync",
    "sync_failed",
    "malformed_block",
    "truncated_file",
    "duplicate_file",
)
OUTCOMES = ("applied", "already_synced", "failed", "refused", "unknown")

# Fault quotas: (count per 300 transactions, minimum). duplicate_file is decided
# when files are written, not scheduled.
_FAULT_RATES = {
    "balance_mismatch": (1, 1),
    "continuity_break": (1, 1),
    "overdraft": (1, 1),
    "repeat_delivery": (2, 2),
    "invalid_action": (1, 1),
    "burst": (1, 1),
    "rapid_manual_deduction": (1, 1),
    "duplicate_tx_id": (1, 1),
    "mad_spike": (1, 1),
    "out_of_sync": (2, 1),
    "sync_failed": (1, 1),
    "malformed_block": (2, 2),
    "truncated_file": (0, 1),
}
# Rare record kinds that are not faults, in every export big enough to hold them.
_FEATURE_RATES = {
    "json_form": (2, 1),
    "transaction_lock": (2, 1),
    "sqs_record": (1, 1),
    "invoke_error": (1, 1),
    "crash": (1, 1),
    "arabic_metadata": (1, 1),
    "quoted_metadata": (1, 1),
    "plain_metadata": (1, 1),
    "refund_undefined": (1, 1),
}
# Transaction blocks each scheduled item writes (all count towards ``transactions``).
_BLOCKS = Counter(
    {
        "balance_mismatch": 1,
        "continuity_break": 1,
        "overdraft": 1,
        "repeat_delivery": 2,
        "invalid_action": 1,
        "burst": 3,
        "rapid_manual_deduction": 2,
        "duplicate_tx_id": 2,
        "mad_spike": 1,
        "out_of_sync": 1,
        "sync_failed": 1,
        "json_form": 1,
        "transaction_lock": 1,
        "sqs_record": 1,
        "invoke_error": 1,
        "arabic_metadata": 1,
        "quoted_metadata": 1,
        "plain_metadata": 1,
        "refund_undefined": 1,
    }
)
_METADATA_FLAVOURS = ("arabic_metadata", "quoted_metadata", "plain_metadata", "refund_undefined")
# Items that print type/source/action/paymentBalance need the 13-key shape.
_NEEDS_TYPED = frozenset(_FAULT_RATES) - {"truncated_file"} | frozenset(_METADATA_FLAVOURS)
_INVOCATION_ITEMS = ("crash", "truncated_file")  # fired instead of a regular invocation
# Clean transactions that carry a rare record before their block, or a rare metadata form.
_FLAVOURS = ("json_form", "transaction_lock", "sqs_record", *_METADATA_FLAVOURS)
_HELD_USERS = ("overdraft", "invoke_error")  # each needs a user of its own
_MIN_FAULTY_TRANSACTIONS = 60
_MIN_FAULTY_USERS = 4


@dataclass(frozen=True)
class _Currency:
    vat: Decimal
    weight: int
    unit_range: tuple[float, float]
    step: Decimal
    places: int
    country: str
    phone: str


_CURRENCIES = {
    "BHD": _Currency(Decimal("0.10"), 64, (6, 14), Decimal("0.1"), 3, "BH", "+973"),
    "SAR": _Currency(Decimal("0.15"), 28, (40, 110), Decimal("1"), 2, "SA", "+966"),
    "AED": _Currency(Decimal("0.05"), 3, (40, 110), Decimal("1"), 2, "AE", "+971"),
    "KWD": _Currency(Decimal("0"), 3, (3, 9), Decimal("0.05"), 3, "KW", "+965"),
    "QAR": _Currency(Decimal("0"), 2, (35, 90), Decimal("1"), 2, "QA", "+974"),
}
_VAT_SOURCES = frozenset({"PAYMENT", "REFUND"})
_DEBITS = (
    ("MANUAL_DEDUCTION", "DELIVERY_DEDUCTION", 90),
    ("MANUAL_DEDUCTION", "REFUNDED_MANUALLY", 2),
    ("MANUAL_DEDUCTION", "DOUBLE_ENTRY", 1),
    ("REFUND", "LEAVING_THE_COUNTRY", 2),
    ("REFUND", "FOREIGN_OBJECT", 2),
    ("REFUND", "MEDICAL_CONDITION", 2),
    ("REFUND", "PARTIAL_REFUND", 1),
)
_CREDITS = (
    ("PAYMENT", "RENEW_SUBSCRIPTION", 20),
    ("PAYMENT", "PAY_PENDING_AMOUNT", 20),
    ("PAYMENT", "ADD_DELIVERY_ADDONS", 12),
    ("PAYMENT", "PURCHASE_ADDON_SUBSCRIPTION", 6),
    ("PAYMENT", "REPLACE_FOOD", 5),
    ("MANUAL_ADDITION", "CUSTOMERS_CALO_EXPERIMENTS", 10),
    ("MANUAL_ADDITION", "REFERRAL_REDEEM_DAYS", 4),
    ("MANUAL_ADDITION", "CHANGE_PLAN", 3),
    ("MANUAL_ADDITION", "CALO_TEAM_PERKS", 3),
    ("MANUAL_ADDITION", "COMPENSATION", 2),
    ("MANUAL_ADDITION", "MANUAL_DISCOUNT", 2),
    ("MANUAL_ADDITION", "CX_GIFT", 1),
)
_REFUND_ACTIONS = ("LEAVING_THE_COUNTRY", "FOREIGN_OBJECT", "MEDICAL_CONDITION", "PARTIAL_REFUND")
# Invented dishes for REPLACE_FOOD metadata: the Arabic text of the export.
_DISHES = (
    ("عدس بالأرز", "Lentils with Rice"),
    ("سلطة دجاج مشوي", "Grilled Chicken Salad"),
    ("شوربة خضار", "Vegetable Soup"),
    ("كبسة لحم", "Lamb Kabsa"),
)
_FIRST_NAMES = ("Noor", "Omar", "Layla", "Yusuf", "Maryam", "Khalid", "Sara", "Ali", "Huda", "Faisal")
_LAST_NAMES = ("Testa", "Sample", "Example", "Demo", "Placeholder", "Fictive")

_DAY_MS = 86_400_000
_START_MS = 1_703_376_000_000  # 2023-12-24T00:00:00Z
_TYPED_FROM_MS = 1_703_548_800_000  # 2023-12-26: the 13-key shape appears
_OLD_UNTIL_MS = 1_704_240_000_000  # 2024-01-03: the 7-key shape is gone
_RUNTIMES = ((1_703_721_600_000, "nodejs:14.v42"), (1_705_708_800_000, "nodejs:20.v13"), (None, "nodejs:20.v15"))
_CRON_FROM_MS, _CRON_LEN_MS = (21 * 60 + 1) * 60_000, 12 * 60_000  # the nightly deduction run
_DAY_FROM_MS, _DAY_LEN_MS = 5 * 3_600_000, 16 * 3_600_000 - 5 * 60_000
_MAX_BATCH = 12  # SQS messages per invocation
_HISTORY = 8  # transactions a user needs before a MAD spike is put on it
_TX_PER_INVOCATION = 3.2
_FILLER_SHARE = 0.12
_MAX_OPEN_STREAMS = 6  # concurrent containers, so files overlap in time
_STREAM_IDLE_MS = 3 * 3_600_000  # a warm container keeps its stream this long
_CLEAN_GAP_MS = 61_000  # clean transactions of one user are further apart than any check window
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_CROCKFORD_PAIRS = [_CROCKFORD[pair >> 5] + _CROCKFORD[pair & 31] for pair in range(1024)]
_PAIR_SHIFTS = tuple(range(120, -1, -10))
_MASK_80 = (1 << 80) - 1
_CREATE_SKIP = ("Skipping the balance sync for create {0}subscription, "
                "it will be synced from create {0}subscription payment listener")
_ALREADY_SYNCED = ("Skipping the process, balance is already synced from other listeners",
                   "Balance is already synced from other listeners")
_FLAG_SKIP = "Skipping the process, Update Payment Balance Flag is set to false"
_REFUSAL = "Subscriber will have a negative balance due to this action, the process will terminate."
_TRACE_PATH = "file:///var/task/src/syncBalance/"


# --------------------------------------------------------------------------- time


class _Clock:
    """ISO timestamps with millisecond precision, caching the formatted second."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, ms: int) -> str:
        second, milli = divmod(ms, 1000)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{milli:03d}Z"


def _day(ms: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ms // 1000))


# --------------------------------------------------------------------------- truth


@dataclass
class GroundTruth:
    """What a correct reader of the export must find.

    Counts cover the distinct readable files: a file dropped twice counts once,
    and the truncated file counts nowhere (it holds no transaction block; its
    record counts are in its fault's detail). ``transactions`` counts parseable
    ``Start syncing`` blocks (repeat deliveries and double applications are
    blocks of their own); ``malformed`` the broken ones, which ``record_kinds``
    still counts under ``start_syncing``. ``sync_errors`` counts the ERROR
    records "Subscription balance and payment balance are not in sync".
    ``files.written`` = ``gzip`` + ``plain`` + ``junk``.
    """

    transactions: int
    malformed: int
    users: int
    per_currency: dict[str, int]
    old_shape: int
    json_form: int
    outcomes: dict[str, int]
    sync_errors: int
    record_kinds: dict[str, int]
    files: dict[str, int]
    faults: list[dict]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    def write(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json(), encoding="utf-8")
        return path

    @classmethod
    def read(cls, path: Path) -> GroundTruth:
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))


# --------------------------------------------------------------------------- model


class _User:
    """A customer: one currency, a usual amount, and the balance the next transaction starts from."""

    __slots__ = ("uid", "currency", "unit", "balance", "phase", "count", "draws", "last_ms", "busy", "faulted", "name",
                 "email", "phone")

    def __init__(self, uid: str, currency: str, unit: Decimal, balance: Decimal, phase: float, number: int) -> None:
        self.uid, self.currency, self.unit, self.balance, self.phase = uid, currency, unit, balance, phase
        self.count = self.draws = 0
        self.last_ms = -(10**15)
        self.busy = False  # a deferred message of this user is still to come
        self.faulted = False
        first, last = _FIRST_NAMES[number % len(_FIRST_NAMES)], _LAST_NAMES[number % len(_LAST_NAMES)]
        self.name = f"{first} {last}"
        self.email = f"{first.lower()}.{last.lower()}{number}@example.com"
        self.phone = f"{_CURRENCIES[currency].phone}{number % 10**8:08d}"


class _Tx:
    """One wallet transaction as the Lambda sees it; ``payment`` is the wallet (payment) balance after it."""

    __slots__ = ("id", "type", "source", "action", "user", "payment", "metadata", "amount", "vat", "old", "new",
                 "created_ms")

    def __init__(self, tx_id: str, kind: str, source: str, action: str, user: _User, payment: Decimal,
                 metadata: object, amount: Decimal, vat: Decimal, old: Decimal, new: Decimal, created_ms: int) -> None:
        self.id, self.type, self.source, self.action, self.user = tx_id, kind, source, action, user
        self.payment, self.metadata, self.amount, self.vat = payment, metadata, amount, vat
        self.old, self.new, self.created_ms = old, new, created_ms

    def block(self, typed: bool) -> str:
        """The ``Start syncing`` message: the 13-key object, or the 7 keys of the old shape."""
        if typed:
            values = (self.id, self.type, self.source, self.action, self.user.uid, self.payment, True, self.metadata,
                      self.user.currency, self.amount, self.vat, self.old, self.new)
            parts = _TYPED_BLOCK
        else:
            values = (self.id, self.user.uid, self.user.currency, self.amount, self.vat, self.old, self.new)
            parts = _OLD_BLOCK
        scalars = SCALARS
        rendered = [scalars[type(value)](value) if type(value) in scalars else inspect(value) for value in values]
        return "".join([part + value for part, value in zip(parts, rendered)]) + parts[-1]

    def copy(self, **changes: object) -> _Tx:
        return _Tx(*[changes.get(key, getattr(self, key)) for key in self.__slots__])


def _block_layout(keys: tuple[str, ...]) -> list[str]:
    """The text around the values of a transaction block, laid out by ``_inspect`` itself.

    Every real block is multi-line (id and userId alone pass 80 columns), so
    holes wider than a line give the same layout, once, instead of per block.
    """
    hole = "\x00" * 81
    return ("Start syncing the balance " + inspect({"transaction": dict.fromkeys(keys, Raw(hole))})).split(hole)


_TYPED_BLOCK = _block_layout(("id", "type", "source", "action", "userId", "paymentBalance", "updatePaymentBalance",
                              "metadata", "currency", "amount", "vat", "oldBalance", "newBalance"))
_OLD_BLOCK = _block_layout(("id", "userId", "currency", "amount", "vat", "oldBalance", "newBalance"))


class _Stream:
    """One Lambda log stream: one file, written when the stream closes."""

    __slots__ = ("path", "gzip", "chunks", "kinds", "has_tx", "has_fault", "last_end", "count", "quota")

    def __init__(self, path: str, is_gzip: bool, quota: int) -> None:
        self.path, self.gzip, self.quota = path, is_gzip, quota
        self.chunks: list[str] = []
        self.kinds: Counter = Counter()
        self.has_tx = self.has_fault = False
        self.last_end = 0
        self.count = 0


class _Invocation:
    """Records of one RequestId, appended in time order with small random gaps."""

    __slots__ = ("stream", "req", "start", "ms", "memory", "init", "parts", "tick", "random", "clock", "message_id",
                 "messages")

    def __init__(self, stream: _Stream, req: str, start: int, export: _Export, memory: int = 1024) -> None:
        self.stream, self.req, self.start, self.ms, self.memory = stream, req, start, start, memory
        self.tick, self.random, self.clock = export.tick, export.random, export.clock
        self.init = ""  # Init Duration of a cold start, printed in REPORT
        self.parts: list[str] = []
        self.message_id = ""
        self.messages = 0  # SQS messages processed so far

    def record(self, kind: str, text: str) -> None:
        self.parts.append(text + "\n\n")
        self.stream.kinds[kind] += 1

    def platform(self, kind: str, text: str, gap: tuple[int, int] | None = None) -> None:
        if gap:
            self.ms += self.tick(*gap)
        self.record(kind, f"{self.clock(self.ms)} {text}")

    def app(self, kind: str, level: str, message: str, gap: tuple[int, int] = (1, 30), req: str | None = None) -> None:
        """An application record; the hottest path of the generator, hence written out in full."""
        low, high = gap
        self.ms += low + int(self.random() * (high - low + 1))
        stamp = self.clock(self.ms)
        self.parts.append(f"{stamp} {stamp}\t{req or self.req}\t{level}\t{message}\n\n")
        self.stream.kinds[kind] += 1

    def metric(self, name: str, user_id: str, action: str) -> None:
        """An embedded-metric-format record, as the Lambda emits on discrepancies."""
        self.ms += self.tick(0, 2)
        aws = {"Timestamp": self.ms - 1, "CloudWatchMetrics": [
            {"Namespace": "apiService", "Dimensions": [["service"]], "Metrics": [{"Name": name, "Unit": "Count"}]}]}
        body = {"_aws": aws, "service": "syncBalanceSQS", name: 1, "userId": user_id, "action": action}
        self.record(f"metric_{name}", f"{self.clock(self.ms)} {stringify(body)}")


# --------------------------------------------------------------------------- export

_FIRED, _ENDED = "fired", "ended"


class _Export:
    """State of one export being written: users, streams, schedule and truth counters."""

    def __init__(self, out_dir: Path, transactions: int, seed: int, users: int | None, faults: bool, gzip_ratio: float):
        if transactions < 1:
            raise ValueError("transactions must be at least 1")
        users = users if users is not None else max(8, transactions // 20)
        if faults and (transactions < _MIN_FAULTY_TRANSACTIONS or users < _MIN_FAULTY_USERS):
            raise ValueError(f"faults need at least {_MIN_FAULTY_TRANSACTIONS} transactions and "
                             f"{_MIN_FAULTY_USERS} users; pass faults=False for smaller exports")
        if not 0 <= gzip_ratio <= 1:
            raise ValueError("gzip_ratio must be between 0 and 1")
        self.out_dir, self.n, self.faults, self.gzip_ratio = Path(out_dir), transactions, faults, gzip_ratio
        rng = self.rng = random.Random(seed)
        self.random = rng.random
        self.tick = self._tick
        self.clock = _Clock()
        self.export_id = self._uuid(4)
        self.overlap_export_id = self._uuid(4)
        self.runtime_arns = {name: f"{rng.getrandbits(256):064x}" for _, name in _RUNTIMES}
        self.account = f"{rng.randrange(10**11, 10**12)}"
        self.ulid_mask = rng.getrandbits(80)
        self.ulid_multipliers = (rng.getrandbits(80) | 1, rng.getrandbits(80) | 1)
        self.serial = 0
        self.span_days = min(120, max(12, round(transactions / 25)))
        # A busier function keeps its containers warm longer: big exports get longer streams, not more files.
        self.stream_scale = min(100, max(1, transactions // 4000))
        # truth counters
        self.emitted = self.malformed = self.old_shape = self.json_form = self.sync_errors = 0
        self.per_currency: Counter = Counter()
        self.outcomes: Counter = Counter({name: 0 for name in OUTCOMES})
        self.kinds: Counter = Counter()
        self.files: Counter = Counter(dict.fromkeys(("written", "gzip", "plain", "junk", "truncated", "duplicate"), 0))
        self.fault_log: list[dict] = []
        self.seen_users: set[str] = set()
        # scheduling
        self.schedule = self._schedule(users)
        self.next_item = 0
        self.waiting: list[str] = []
        self.reserved = sum(_BLOCKS[kind] for _, _, kind in self.schedule)  # blocks promised to items
        self.pending: list[tuple[int, int, Callable[[_Invocation], None]]] = []
        self.pending_blocks = self.pending_seq = 0
        self.fired: Counter = Counter()
        # users and streams
        self.active, self.reserved_users = self._users(users)
        self.experienced: list[_User] = []  # users with a history a spike can stand out from
        self.busiest: _User | None = None
        self.open: list[_Stream] = []
        self.folders: set[str] = set()
        self.gzip_files = self.plain_files = self.swapped = self.create_skips = 0
        self.duplicate_done = not faults

    # ----------------------------------------------------------------- set-up

    def _tick(self, low: int, high: int) -> int:
        """A uniform integer in [low, high]: randint's result for the hot paths, at a fraction of its cost."""
        return low + int(self.random() * (high - low + 1))

    def _uuid(self, version: int) -> str:
        """A random UUID (version 4 for ids, 5 for Lambda request ids)."""
        value = self.rng.getrandbits(128) & ~(0xF << 76) & ~(0x3 << 62) | (version << 76) | (0x2 << 62)
        text = f"{value:032x}"
        return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"

    def _ulid(self, ms: int) -> str:
        """A ULID whose random part is a bijective scramble of a serial: random-looking, unique by construction."""
        self.serial += 1
        mixed = self.serial ^ self.ulid_mask
        for multiplier in self.ulid_multipliers:  # xor-shift-multiply rounds, each one invertible mod 2**80
            mixed ^= mixed >> 41
            mixed = (mixed * multiplier) & _MASK_80
        value = ms << 80 | mixed  # 130 bits, two leading zeros: 13 pairs of Crockford digits
        return "".join([_CROCKFORD_PAIRS[(value >> shift) & 1023] for shift in _PAIR_SHIFTS])

    def _hex(self, digits: int) -> str:
        return f"{self.rng.getrandbits(4 * digits):0{digits}x}"

    def _schedule(self, users: int) -> list[tuple[float, int, str]]:
        """Stratified positions (in emitted blocks) for every fault and rare record kind.

        Faults come first; rare kinds are dropped from tiny exports rather than
        crowd out clean data (items may use at most half the blocks). Kinds that
        use up a user of their own are capped so that most users stay in play.
        """
        rates = {**_FAULT_RATES, **_FEATURE_RATES} if self.faults else dict(_FEATURE_RATES)
        low, high = 0.15 * self.n, 0.9 * self.n
        items, budget = [], self.n // 2
        for kind, (per_300, minimum) in rates.items():
            quota = max(minimum, round(self.n * per_300 / 300))
            if kind in _HELD_USERS:
                quota = min(quota, users // 4)
            if _BLOCKS[kind]:
                quota = min(quota, budget // _BLOCKS[kind])
                budget -= quota * _BLOCKS[kind]
            if quota < 1:
                continue
            width = (high - low) / quota
            items.extend((low + (i + self.rng.random()) * width, len(items), kind) for i in range(quota))
        items.sort()
        return items

    def _users(self, count: int) -> tuple[list[_User], dict[str, list[_User]]]:
        """The user pool; a few users are held back for faults that need a fresh chain."""
        rng, codes = self.rng, list(_CURRENCIES)
        weights = [currency.weight for currency in _CURRENCIES.values()]
        roles = {kind: sum(1 for *_, item in self.schedule if item == kind) for kind in _HELD_USERS}
        held = sum(roles.values())
        seen, pool = set(), []
        for number in range(count):
            code = codes[number] if number < len(codes) else rng.choices(codes, weights)[0]
            currency = _CURRENCIES[code]
            unit = currency.step * round(rng.uniform(*currency.unit_range) / float(currency.step))
            cents = Decimal(rng.randrange(10**currency.places)).scaleb(-currency.places)
            balance = unit * rng.randint(15, 60) + cents
            uid = self._uuid(4)
            while uid in seen:
                uid = self._uuid(4)
            seen.add(uid)
            pool.append(_User(uid, code, unit, balance, rng.random(), number + 1))
        reserved = {"overdraft": pool[count - held:count - held + roles["overdraft"]],
                    "invoke_error": pool[count - roles["invoke_error"]:]}
        for user in reserved["overdraft"]:
            user.balance = (user.unit * Decimal(rng.uniform(0.2, 0.6))).quantize(Decimal("0.001"))
        return pool[:count - held], reserved

    # ----------------------------------------------------------------- main loop

    def run(self) -> GroundTruth:
        stalled = 0
        for start in self._invocation_times():
            while self.pending and self.pending[0][0] < start:
                self._pending_invocation()
            if self._finished():
                break
            if self._clean_budget() == 0 and not self.waiting and self.next_item == len(self.schedule):
                continue  # only deferred messages are left; wait for them
            before = (self.emitted, self.next_item, len(self.waiting))
            self._regular_invocation(start)
            stalled = 0 if (self.emitted, self.next_item, len(self.waiting)) != before else stalled + 1
            if stalled > 20_000:
                raise RuntimeError(f"cannot place {self.waiting}: no eligible user; raise users or transactions")
            assert self.emitted <= self.n, "scheduled items overran the transaction count"
        for stream in list(self.open):
            self._close(stream)
        self._junk()
        if self.emitted != self.n:
            raise AssertionError(f"wrote {self.emitted} blocks, expected {self.n}")
        return self._truth()

    def _invocation_times(self):
        """Invocation start times, day after day: a nightly deduction run plus daytime traffic."""
        rng = self.rng
        mean = self.n / self.span_days / _TX_PER_INVOCATION
        day = 0
        while True:
            base = _START_MS + day * _DAY_MS
            times = [base + (_CRON_FROM_MS + rng.randrange(_CRON_LEN_MS) if rng.random() < 0.4
                             else _DAY_FROM_MS + rng.randrange(_DAY_LEN_MS))
                     for _ in range(max(1, round(mean * rng.uniform(0.7, 1.3))))]
            times.sort()
            yield from times
            day += 1

    def _finished(self) -> bool:
        return (self.emitted == self.n and not self.pending and not self.waiting
                and self.next_item == len(self.schedule))

    def _clean_budget(self) -> int:
        return self.n - self.emitted - self.pending_blocks - self.reserved

    def _refill_waiting(self) -> None:
        while self.next_item < len(self.schedule) and self.schedule[self.next_item][0] <= self.emitted:
            self.waiting.append(self.schedule[self.next_item][2])
            self.next_item += 1

    def _regular_invocation(self, start: int) -> None:
        self._refill_waiting()
        for kind in _INVOCATION_ITEMS:
            if kind in self.waiting:
                self._take(kind)
                (self._crash if kind == "crash" else self._truncated_file)(start)
                return
        inv = self._open_invocation(start)
        size = 1 if self.rng.random() < 0.55 else self.rng.randint(2, _MAX_BATCH)
        while inv.messages < size:
            self._refill_waiting()
            status = self._fire_waiting(inv)
            if status == _ENDED:
                break
            if status == _FIRED:
                continue
            if self._clean_budget() > 0 and self.rng.random() >= _FILLER_SHARE and self._clean_message(inv):
                continue
            self._filler(inv)
        self._close_invocation(inv)

    def _take(self, kind: str) -> None:
        self.waiting.remove(kind)
        self.reserved -= _BLOCKS[kind]
        self.fired[kind] += 1

    def _fire_waiting(self, inv: _Invocation) -> str | None:
        """Fire the first waiting item whose preconditions hold now; the others keep waiting."""
        for kind in list(self.waiting):
            if kind in _INVOCATION_ITEMS or (kind in _NEEDS_TYPED and inv.ms < _TYPED_FROM_MS):
                continue
            if kind in _FLAVOURS:
                status = _FIRED if self._clean_message(inv, kind) else None
            else:
                status = self._ITEMS[kind](self, inv, self.fired[kind])
            if status is not None:
                self._take(kind)
                return status
        return None

    def _defer(self, due: int, user: _User, write: Callable[[_Invocation], None]) -> None:
        """Queue one block of ``user`` for a later invocation; the user takes no other transaction meanwhile."""
        user.busy = True
        self.pending_blocks += 1
        self.pending_seq += 1
        heapq.heappush(self.pending, (due, self.pending_seq, write))

    def _pending_invocation(self) -> None:
        due, _, write = heapq.heappop(self.pending)
        inv = self._open_invocation(due)
        self.pending_blocks -= 1
        write(inv)
        self._close_invocation(inv)

    # ----------------------------------------------------------------- streams and files

    def _stream_for(self, start: int) -> _Stream:
        for stream in list(self.open):
            if stream.count >= stream.quota or start - stream.last_end > _STREAM_IDLE_MS:
                self._close(stream)
        free = [stream for stream in self.open if stream.last_end < start]
        if free and (len(self.open) >= _MAX_OPEN_STREAMS or self.rng.random() >= 0.15 / self.stream_scale):
            return free[int(self.random() * len(free))]
        stream = self._new_stream(start)
        self.open.append(stream)
        return stream

    def _new_stream(self, start: int, force_gzip: bool = False) -> _Stream:
        """A stream with a unique ``<day>-[$LATEST]<hex>`` folder and a file name that lies about its content."""
        rng = self.rng
        folder = f"{_day(start - 2000)}-[$LATEST]{self._hex(32)}"
        while folder in self.folders:
            folder = f"{_day(start - 2000)}-[$LATEST]{self._hex(32)}"
        self.folders.add(folder)
        is_gzip = force_gzip or rng.random() < self.gzip_ratio
        if is_gzip:
            name = "000000" if self.gzip_files % 12 == 3 and not force_gzip else "000000.gz"
            self.gzip_files += 1
        else:
            name = ("000000.log", "000000", "000000.txt")[self.plain_files % 3]
            self.plain_files += 1
        roll = rng.random()
        quota = 1 if roll < 0.45 else rng.randint(2, 3) if roll < 0.75 else rng.randint(4, 40)
        quota *= self.stream_scale
        return _Stream(f"balance-sync-logs/{self.export_id}/{folder}/{name}", is_gzip, quota)

    def _close(self, stream: _Stream, truncate: bool = False) -> None:
        """Write a stream's file; swap two adjacent invocations in some files, as real exports do."""
        if stream in self.open:
            self.open.remove(stream)
        chunks = stream.chunks
        if len(chunks) > 1 and (self.swapped == 0 or self.rng.random() < 0.2):
            i = self.rng.randrange(len(chunks) - 1)
            chunks[i], chunks[i + 1] = chunks[i + 1], chunks[i]
            self.swapped += 1
        data = "".join(chunks).encode("utf-8")
        if stream.gzip:
            data = gzip.compress(data, compresslevel=1, mtime=0)  # readers cannot tell the level; 1 is twice as fast
        if truncate:
            full, data = len(data), data[: len(data) // 2]
            self._fault("truncated_file", [], stream.path, {
                "bytes_written": len(data), "bytes_complete": full, "records_lost": sum(stream.kinds.values())})
            self.files["truncated"] += 1
        else:
            self.kinds.update(stream.kinds)
        kind = "gzip" if stream.gzip else "plain"
        self._write(stream.path, data, kind)
        if not self.duplicate_done and stream.has_tx and not stream.has_fault and not truncate:
            self.duplicate_done = True  # an overlapping second export holding the same file
            copy = stream.path.replace(self.export_id, self.overlap_export_id, 1)
            self._write(copy, data, kind)
            self.files["duplicate"] += 1
            self._fault("duplicate_file", [], copy, {"original": stream.path})

    def _write(self, relative: str, data: bytes, kind: str) -> None:
        path = self.out_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.files["written"] += 1
        self.files[kind] += 1

    def _junk(self) -> None:
        """Finder litter that real drops carry: an AppleDouble file and a .DS_Store."""
        apple_double = struct.pack(">II16sHIII", 0x00051607, 0x00020000, b"Mac OS X        ", 1, 9, 38, 32) + bytes(32)
        ds_store = b"\x00\x00\x00\x01Bud1" + struct.pack(">IIII", 0x1000, 0x800, 0x1000, 0x100C) + bytes(4072)
        self._write("__MACOSX/balance-sync-logs/._.DS_Store", apple_double, "junk")
        self._write("balance-sync-logs/.DS_Store", ds_store, "junk")

    # ----------------------------------------------------------------- invocations

    def _open_invocation(self, start: int, stream: _Stream | None = None) -> _Invocation:
        """START, preceded by INIT_START when a new container opens its stream (most of the time)."""
        stream = stream or self._stream_for(start)
        inv = _Invocation(stream, self._uuid(5), start, self)
        if not stream.chunks and self.rng.random() < 0.8:
            init = self.tick(600, 1000)
            inv.ms = start - init
            version = next(name for until, name in _RUNTIMES if until is None or start < until)
            inv.platform("init_start", f"INIT_START Runtime Version: {version}\tRuntime Version ARN: "
                                       f"arn:aws:lambda:us-east-1::runtime:{self.runtime_arns[version]}")
            inv.init = f"{init + self.rng.random():.2f}"
            inv.ms = start
        inv.platform("start", f"START RequestId: {inv.req} Version: $LATEST")
        return inv

    def _close_invocation(self, inv: _Invocation) -> None:
        """END and REPORT (with Init Duration after a cold start, sometimes an XRAY line)."""
        inv.platform("end", f"END RequestId: {inv.req}", (1, 40))
        duration = inv.ms - inv.start + self.rng.random()
        report = (f"REPORT RequestId: {inv.req}\tDuration: {duration:.2f} ms\t"
                  f"Billed Duration: {math.ceil(duration)} ms\tMemory Size: {inv.memory} MB\t"
                  f"Max Memory Used: {self.tick(88, 125)} MB\t")
        if inv.init:
            report += f"Init Duration: {inv.init} ms\t"
        if self.rng.random() < 0.1:
            report += (f"\nXRAY TraceId: 1-{inv.ms // 1000:08x}-{self._hex(24)}\tSegmentId: {self._hex(16)}"
                       f"\tSampled: true\t")
        inv.platform("report", report)
        stream = inv.stream
        stream.chunks.append("".join(inv.parts))
        stream.last_end = inv.ms
        stream.count += 1

    def _processing(self, inv: _Invocation) -> None:
        inv.messages += 1
        inv.message_id = self._uuid(4)
        inv.app("processing_message", "INFO", f"Processing message {inv.message_id}", (1, 40))

    def _filler(self, inv: _Invocation) -> None:
        """A message with no transaction block: create-subscription or update-flag skip."""
        self._processing(inv)
        if self.rng.random() < 0.55:
            self.create_skips += 1
            variant = "web " if self.create_skips % 4 == 0 else ""
            inv.app("skip_create_subscription", "INFO", _CREATE_SKIP.format(variant))
        else:
            flag = inspect({"transactionAction": "DONATE_RAMADAN_MEAL"})
            inv.app("skip_update_flag", "INFO", f"{_FLAG_SKIP} {flag}")

    def _crash(self, start: int) -> None:
        """A container that dies in init: Uncaught Exception (request id undefined), INIT_REPORT error."""
        stream = self._new_stream(start)
        inv = _Invocation(stream, self._uuid(5), start, self, memory=512)
        inv.ms = start - 2000
        error = {"errorType": "Error", "errorMessage": "Cannot find package 'dayjs' imported from "
                 "/var/task/src/syncBalance/listener.mjs", "code": "ERR_MODULE_NOT_FOUND",
                 "stack": ["Error [ERR_MODULE_NOT_FOUND]: Cannot find package 'dayjs' imported from "
                           "/var/task/src/syncBalance/listener.mjs",
                           "    at packageResolve (node:internal/modules/esm/resolve:854:9)",
                           "    at moduleResolve (node:internal/modules/esm/resolve:903:20)"]}
        for _ in range(self.rng.randint(1, 3)):
            inv.app("uncaught_exception", "ERROR", f"Uncaught Exception \t{stringify(error)}", (300, 600),
                    req="undefined")
            inv.platform("init_report", f"INIT_REPORT Init Duration: {self.tick(700, 800) + self.rng.random():.2f} ms"
                                        "\tPhase: invoke\tStatus: error\tError Type: Runtime.ExitError", (50, 120))
        inv.start = inv.ms
        inv.platform("start", f"START RequestId: {inv.req} Version: $LATEST")
        inv.platform("runtime_unknown", "Unknown application error occurred\nRuntime.Unknown", (0, 20))
        self._close_invocation(inv)
        self._close(stream)

    def _truncated_file(self, start: int) -> None:
        """A gzip file cut in the middle; it holds only skip messages so no figure depends on salvage."""
        stream = self._new_stream(start, force_gzip=True)
        moment = start
        for _ in range(self.rng.randint(3, 6)):
            inv = self._open_invocation(moment, stream)
            for _ in range(self.rng.randint(1, 3)):
                self._filler(inv)
            self._close_invocation(inv)
            moment = inv.ms + self.tick(2000, 30_000)
        self._close(stream, truncate=True)

    # ----------------------------------------------------------------- transactions

    def _pick_user(self, now: int, *, units: int = 0, fresh: bool = False,
                   pool: list[_User] | None = None) -> _User | None:
        """A random user free of any recent transaction, so clean data never forms a burst.

        ``units``: the balance must cover that many usual amounts; ``fresh``: no fault yet.
        """
        pool = pool if pool is not None else self.active
        for _ in range(12 if pool else 0):
            user = pool[int(self.random() * len(pool))]
            if (now - user.last_ms > _CLEAN_GAP_MS and not user.busy and user.balance >= user.unit * units
                    and not (fresh and user.faulted)):
                return user
        return None

    def _net(self, user: _User, source: str, scale: int = 1) -> Decimal:
        """The user's next amount before VAT, chosen so the amount with VAT is within 15% of the usual.

        The spread follows a van der Corput sequence, whose every prefix is evenly
        spread, so even a short history has no clean amount standing out to a
        median/MAD check.
        """
        currency = _CURRENCIES[user.currency]
        user.draws += 1
        share, index, weight = user.phase, user.draws, 0.5
        while index:
            share += (index & 1) * weight
            index, weight = index >> 1, weight / 2
        share %= 1.0
        target = float(user.unit) * scale * (0.85 + 0.3 * share) / (1 + float(self._vat_rate(user, source)))
        return currency.step * max(1, round(target / float(currency.step)))

    @staticmethod
    def _vat_rate(user: _User, source: str) -> Decimal:
        return _CURRENCIES[user.currency].vat if source in _VAT_SOURCES else Decimal(0)

    def _tx(self, user: _User, now: int, kind: str, source: str, action: str, *, net: Decimal | None = None,
            scale: int = 1, metadata: object = None, old: Decimal | None = None, noise: bool = False) -> _Tx:
        """A transaction on the user's chain: amount includes VAT, newBalance = old -/+ (amount - vat)."""
        net = self._net(user, source, scale) if net is None else net
        vat = (net * self._vat_rate(user, source)).normalize()
        amount = net + vat
        old = user.balance if old is None else old
        sign = -1 if kind == "DEBIT" else 1
        if noise:  # the Lambda computes in binary floats, so a few values carry noise
            new = Decimal(repr(float(old) + sign * (float(amount) - float(vat))))
        else:
            new = old + sign * net
        created = now - self.tick(200, 20_000)
        metadata = self._metadata(user, source, action) if metadata is None else metadata
        return _Tx(self._ulid(created), kind, source, action, user, new, metadata, amount, vat, old, new, created)

    def _metadata(self, user: _User, source: str, action: str, dish: bool = False) -> object:
        """The metadata string: JSON the upstream service wrote, undefined on some refunds."""
        wallet = f'"walletId":"wallet#{user.uid}"'
        if source == "REFUND":
            return UNDEFINED if self.rng.random() < 0.5 else '{"version":"syncBalanceSQS"}'
        if source == "MANUAL_DEDUCTION":
            delivery = self._uuid(4)
            version = ',"version":"syncBalanceSQS"' if self.rng.random() < 0.25 else ""
            return f'{{{wallet},"deliveryId":"{delivery}","walletSk":"{delivery}"{version}}}'
        if source == "MANUAL_ADDITION":
            return f'{{{wallet},"walletSk":"{self._uuid(4)}"}}'
        if dish or (action == "REPLACE_FOOD" and self.rng.random() < 0.3):
            old_dish, new_dish = self.rng.sample(_DISHES, 2)
            sides = {side: json.dumps({"id": self._uuid(4), "name": {"ar": ar, "en": en}}, ensure_ascii=False,
                                      separators=(",", ":"))
                     for side, (ar, en) in (("source", old_dish), ("target", new_dish))}
            body = {"walletId": f"wallet#{user.uid}", "deliveryId": self._uuid(4), "eventSessionId": self._uuid(4),
                    "walletSk": self._uuid(4), "version2": True, **sides, "API_VERSION_2": True}
            return json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        return f'{{{wallet},"eventSessionId":"{self._uuid(4)}","walletSk":"{self._uuid(4)}","version2":true}}'

    def _clean_tx(self, user: _User, now: int) -> _Tx:
        """A clean transaction whose direction keeps the balance comfortably positive."""
        rng, unit = self.rng, user.unit
        debit = user.balance > unit * 150 or (user.balance >= unit * 8 and rng.random() < 0.82)
        table = _DEBITS if debit else _CREDITS
        source, action, _ = rng.choices(table, cum_weights=_CUMULATIVE[debit])[0]
        return self._tx(user, now, "DEBIT" if debit else "CREDIT", source, action, noise=rng.random() < 0.05)

    def _flavoured_tx(self, user: _User, now: int, flavour: str) -> _Tx:
        """Clean transactions whose metadata takes one of the rarer string forms."""
        if flavour == "arabic_metadata":
            return self._tx(user, now, "CREDIT", "PAYMENT", "REPLACE_FOOD",
                            metadata=self._metadata(user, "PAYMENT", "REPLACE_FOOD", dish=True))
        if flavour == "refund_undefined":
            return self._tx(user, now, "DEBIT", "REFUND", self.rng.choice(_REFUND_ACTIONS), metadata=UNDEFINED)
        if flavour == "quoted_metadata":  # JSON holding a ' : util.inspect switches to backticks
            return self._tx(user, now, "CREDIT", "MANUAL_ADDITION", "COMPENSATION",
                            metadata=f'{{"walletId":"wallet#{user.uid}","reason":"Customer\'s meal arrived late"}}')
        # plain text holding a ' : util.inspect switches to double quotes
        return self._tx(user, now, "CREDIT", "MANUAL_ADDITION", "CX_GIFT", metadata="CX gift: customer's birthday")

    def _typed(self, now: int) -> bool:
        """Which shape the Lambda logged at that date (both shapes live side by side for a week)."""
        if now < _TYPED_FROM_MS:
            return False
        return now >= _OLD_UNTIL_MS or self.rng.random() >= 0.35

    def _transaction(self, inv: _Invocation, tx: _Tx, *, typed: bool = True, outcome: str = "applied",
                     prelude: Callable[[_Export, _Invocation, _Tx], None] | None = None) -> None:
        """One SQS message carrying a transaction: Processing, optional prelude, the block, its outcome."""
        self._processing(inv)
        if prelude:
            prelude(self, inv, tx)
        inv.app("start_syncing", "INFO", tx.block(typed))
        self._count_block(inv, tx, typed, outcome)
        self._OUTCOMES[outcome](self, inv, tx)
        if outcome == "applied" and tx.payment != tx.new:
            self._not_in_sync(inv, tx)

    def _count_block(self, inv: _Invocation, tx: _Tx, typed: bool, outcome: str) -> None:
        user = tx.user
        self.emitted += 1
        self.per_currency[user.currency] += 1
        self.old_shape += not typed
        self.outcomes[outcome] += 1
        self.seen_users.add(user.uid)
        inv.stream.has_tx = True
        user.count += 1
        user.last_ms = max(user.last_ms, inv.ms)
        if user.count == _HISTORY:
            self.experienced.append(user)
        if self.busiest is None or user.count > self.busiest.count:
            self.busiest = user

    def _commit(self, tx: _Tx) -> None:
        tx.user.balance = tx.new

    def _fault(self, kind: str, tx_ids: list[str], file: str, detail: dict) -> None:
        self.fault_log.append({"kind": kind, "tx_ids": tx_ids, "file": file, "detail": detail})

    def _fault_at(self, inv: _Invocation, kind: str, txs: list[_Tx], **detail: object) -> None:
        inv.stream.has_fault = True
        self._fault(kind, [tx.id for tx in txs], inv.stream.path, {"user_id": txs[0].user.uid, **detail})

    def _clean_message(self, inv: _Invocation, flavour: str | None = None) -> bool:
        """A clean transaction, possibly carrying one of the rare record kinds."""
        user = self._pick_user(inv.ms, units=10 if flavour == "refund_undefined" else 0)
        if user is None:
            return False
        if flavour in _METADATA_FLAVOURS:
            tx = self._flavoured_tx(user, inv.ms, flavour)
        else:
            tx = self._clean_tx(user, inv.ms)
        typed = flavour in _NEEDS_TYPED or self._typed(inv.ms)
        self._transaction(inv, tx, typed=typed, prelude=self._PRELUDES.get(flavour))
        self._commit(tx)
        return True

    # ----------------------------------------------------------------- prelude records

    def _json_record(self, tx: _Tx) -> dict:
        """The raw transaction as the upstream service sent it, personal fields included (all fake)."""
        user, rng = tx.user, self.rng
        body = {"id": tx.id, "type": tx.type, "source": tx.source, "action": tx.action, "amount": tx.amount,
                "vat": tx.vat, "userBalance": tx.payment, "userId": user.uid, "name": user.name, "email": user.email,
                "phoneNumber": user.phone, "brand": "CALO", "kitchen": f"{_CURRENCIES[user.currency].country}001",
                "invoiceId": self._uuid(4), "currency": user.currency, "paymentMethod": "cc",
                "paymentProvider": rng.choice(("TAP", "CHECKOUT")),
                "notes": f"Payment for {tx.action.replace('_', ' ').title()}",
                "uniqueReferenceId": f"chg_{self._hex(24)}", "updatePaymentBalance": True}
        if tx.metadata is not UNDEFINED:  # JSON.stringify drops undefined keys
            body["metadata"] = (json.loads(tx.metadata, parse_float=Decimal) if tx.metadata.startswith("{")
                                else tx.metadata)
        body.update({"actor": "system", "createdAt": self.clock(tx.created_ms)})
        return body

    def _prelude_json_form(self, inv: _Invocation, tx: _Tx) -> None:
        inv.app("transaction_json", "INFO", f"transaction {stringify(self._json_record(tx))}")
        self.json_form += 1

    def _prelude_transaction_lock(self, inv: _Invocation, tx: _Tx) -> None:
        lock = {"original": {"pk": f"TRANSACTION_LOCK#{tx.user.uid}", "sk": tx.id, "userId": tx.user.uid,
                             "createdAt": self.clock(inv.ms), "ttl": inv.ms // 1000 + 300}}
        inv.app("transaction_lock", "INFO", f"Transaction Lock created{'!' * 24} Rr {inspect(lock)}")

    def _prelude_sqs_record(self, inv: _Invocation, tx: _Tx) -> None:
        body = stringify(self._json_record(tx))
        sent = str(tx.created_ms + self.tick(50, 900))
        record = {"messageId": inv.message_id, "receiptHandle": "AQEB" + self._hex(160),
                  "body": body, "attributes": {
                      "ApproximateReceiveCount": "1",
                      "AWSTraceHeader": f"Root=1-{inv.ms // 1000:08x}-{self._hex(24)};Parent={self._hex(16)};Sampled=0",
                      "SentTimestamp": sent, "SequenceNumber": str(self.rng.getrandbits(64)),
                      "MessageGroupId": tx.user.uid, "SenderId": f"AIDA{self._hex(17).upper()}",
                      "MessageDeduplicationId": tx.id, "ApproximateFirstReceiveTimestamp": sent},
                  "messageAttributes": {}, "md5OfBody": hashlib.md5(body.encode()).hexdigest(),
                  "eventSource": "aws:sqs",
                  "eventSourceARN": f"arn:aws:sqs:us-east-1:{self.account}:calo-sync-balance.fifo",
                  "awsRegion": "us-east-1"}
        inv.app("sqs_record", "INFO", f"record {inspect(record)}")

    #: The record a flavoured clean message logs before its block (metadata flavours log none).
    _PRELUDES = {"json_form": _prelude_json_form, "transaction_lock": _prelude_transaction_lock,
                 "sqs_record": _prelude_sqs_record}

    # ----------------------------------------------------------------- outcome records

    def _outcome_applied(self, inv: _Invocation, tx: _Tx) -> None:
        inv.app("event_published", "INFO", "SubscriptionBalanceUpdated event published", (20, 90))

    def _outcome_already_synced(self, inv: _Invocation, tx: _Tx) -> None:
        inv.app("already_synced", "INFO", _ALREADY_SYNCED[self.outcomes["already_synced"] % 2])

    def _outcome_failed(self, inv: _Invocation, tx: _Tx) -> None:
        stack = "\n".join(f"    at {frame}" for frame in (
            f"updateSubscriptionBalance ({_TRACE_PATH}service.mjs:{self.tick(60, 140)}:{self.tick(5, 60)})",
            f"async Promise.all (index {self.tick(0, 11)})",
            f"async Runtime.handler ({_TRACE_PATH}listener.mjs:{self.tick(20, 60)}:{self.tick(3, 30)})"))
        inv.app("sync_error", "ERROR", "An error occured while syncing the balance TypeError: Cannot read "
                f"properties of undefined (reading 'balance')\n{stack}", (10, 60))
        inv.metric("synBalanceError", tx.user.uid, tx.action)

    def _outcome_refused(self, inv: _Invocation, tx: _Tx) -> None:
        data = {"userId": tx.user.uid, "currentBalance": tx.old, "transactionId": tx.id}
        refusal = {"message": _REFUSAL, "data": data}
        inv.app("refusal", "INFO", inspect(refusal), (2, 20))
        inv.metric("negativeBalance", tx.user.uid, tx.action)

    def _outcome_unknown(self, inv: _Invocation, tx: _Tx) -> None:
        error = {"errorType": "TypeError", "errorMessage": "Cannot read properties of undefined (reading 'Items')",
                 "stack": ["TypeError: Cannot read properties of undefined (reading 'Items')",
                           f"    at getSubscription ({_TRACE_PATH}repository.mjs:41:23)",
                           f"    at async Runtime.handler ({_TRACE_PATH}listener.mjs:30:9)"]}
        inv.app("invoke_error", "ERROR", f"Invoke Error \t{stringify(error)}", (5, 40))

    #: What the Lambda logs after a block, by outcome (every one of OUTCOMES).
    _OUTCOMES = {"applied": _outcome_applied, "already_synced": _outcome_already_synced,
                 "failed": _outcome_failed, "refused": _outcome_refused, "unknown": _outcome_unknown}

    def _not_in_sync(self, inv: _Invocation, tx: _Tx) -> None:
        """The ERROR for a payment balance that disagrees, with its metric (and a Slack alert sometimes)."""
        balances = {"userId": tx.user.uid, "subscriptionBalance": tx.new, "paymentBalance": tx.payment}
        inv.app("not_in_sync", "ERROR",
                f"Subscription balance and payment balance are not in sync {inspect(balances)}", (15, 45))
        self.sync_errors += 1
        slack = self.sync_errors % 3 == 1
        if slack:
            inv.app("slack_notification", "INFO", "Sending slack notification")
        inv.metric("subBalanceDiscrapancy", tx.user.uid, tx.action)
        if slack:
            text, fields = {"type": "section", "text": Raw("[Object]")}, {"type": "section", "fields": Raw("[Array]")}
            country = _CURRENCIES[tx.user.currency].country
            alert = {"country": country, "channel": "subscription-service-alarms", "kitchen": f"{country}001",
                     "brand": "CALO", "suppress": False, "blocks": [text, fields, text]}
            inv.app("slack_notification", "INFO", f"Sending slack notification {inspect(alert)} "
                    f"arn:aws:sns:us-east-1:{self.account}:calo-sns-send-slack", (0, 2))

    # ----------------------------------------------------------------- faults

    def _fault_user(self, inv: _Invocation, units: int = 8, pool: list[_User] | None = None) -> _User | None:
        """A user for a fault, preferably one without a fault yet, so no history is made of faults alone."""
        user = (self._pick_user(inv.ms, units=units, fresh=True, pool=pool)
                or self._pick_user(inv.ms, units=units, pool=pool))
        if user is not None:
            user.faulted = True
        return user

    def _item_balance_mismatch(self, inv: _Invocation, index: int) -> str | None:
        """newBalance off by several usual amounts; the chain goes on from the logged value."""
        user = self._fault_user(inv)
        if user is None:
            return None
        tx = self._tx(user, inv.ms, "DEBIT", "MANUAL_DEDUCTION", "DELIVERY_DEDUCTION")
        expected = tx.new
        tx.new = tx.payment = expected + user.unit * self.rng.randint(3, 8)
        self._transaction(inv, tx)
        self._commit(tx)
        self._fault_at(inv, "balance_mismatch", [tx], expected_new_balance=js_number(expected),
                       logged_new_balance=js_number(tx.new))
        return _FIRED

    def _item_continuity_break(self, inv: _Invocation, index: int) -> str | None:
        """oldBalance jumps above the previous newBalance; the block's own arithmetic holds."""
        user = self._fault_user(inv)
        if user is None:
            return None
        previous = user.balance
        tx = self._tx(user, inv.ms, "DEBIT", "MANUAL_DEDUCTION", "DELIVERY_DEDUCTION",
                      old=previous + user.unit * self.rng.randint(5, 15))
        self._transaction(inv, tx)
        self._commit(tx)
        self._fault_at(inv, "continuity_break", [tx], previous_new_balance=js_number(previous),
                       logged_old_balance=js_number(tx.old))
        return _FIRED

    def _item_overdraft(self, inv: _Invocation, index: int) -> str | None:
        """A debit past zero on a nearly empty wallet: the Lambda refuses it, the chain stays put."""
        user = self.reserved_users["overdraft"][index]
        net = max(self._net(user, "MANUAL_DEDUCTION"), user.balance + _CURRENCIES[user.currency].step)
        tx = self._tx(user, inv.ms, "DEBIT", "MANUAL_DEDUCTION", "DOUBLE_ENTRY", net=net)
        self._transaction(inv, tx, outcome="refused")
        user.faulted = True
        self.active.append(user)  # from now on an ordinary user, with a nearly empty wallet
        self._fault_at(inv, "overdraft", [tx], old_balance=js_number(tx.old), new_balance=js_number(tx.new),
                       outcome="refused")
        return _FIRED

    def _item_repeat_delivery(self, inv: _Invocation, index: int) -> str | None:
        """SQS delivers a payment twice; the second time the Lambda finds it already synced."""
        user = self._fault_user(inv, 0)
        if user is None:
            return None
        tx = self._tx(user, inv.ms, "CREDIT", "PAYMENT", "PAY_PENDING_AMOUNT")
        self._transaction(inv, tx)
        self._commit(tx)
        first = inv.stream.path

        def repeat(later: _Invocation) -> None:
            user.busy = False
            self._transaction(later, tx, outcome="already_synced")
            self._fault_at(later, "repeat_delivery", [tx], first_file=first, outcome="already_synced")

        self._defer(inv.ms + self.tick(120_000, 600_000), user, repeat)
        return _FIRED

    def _item_invalid_action(self, inv: _Invocation, index: int) -> str | None:
        """A deduction with the upstream typo INVAILID_ENTRY as its action, otherwise clean."""
        user = self._fault_user(inv)
        if user is None:
            return None
        tx = self._tx(user, inv.ms, "DEBIT", "MANUAL_DEDUCTION", "INVAILID_ENTRY")
        self._transaction(inv, tx)
        self._commit(tx)
        self._fault_at(inv, "invalid_action", [tx], action="INVAILID_ENTRY")
        return _FIRED

    def _item_burst(self, inv: _Invocation, index: int) -> str | None:
        """Three transactions of one user inside one invocation, well within a second."""
        user = self._fault_user(inv, 12) if inv.messages + 3 <= _MAX_BATCH else None
        if user is None:
            return None
        begin, txs, amounts = inv.ms, [], set()
        for kind, source, action in (("DEBIT", "MANUAL_DEDUCTION", "DELIVERY_DEDUCTION"),
                                     ("CREDIT", "PAYMENT", "ADD_DELIVERY_ADDONS"),
                                     ("DEBIT", "MANUAL_DEDUCTION", "DELIVERY_DEDUCTION")):
            net = self._net(user, source)
            while net in amounts:
                net += _CURRENCIES[user.currency].step
            amounts.add(net)
            tx = self._tx(user, inv.ms, kind, source, action, net=net)
            self._transaction(inv, tx)
            self._commit(tx)
            txs.append(tx)
        self._fault_at(inv, "burst", txs, seconds=(inv.ms - begin) / 1000)
        return _FIRED

    def _item_rapid_manual_deduction(self, inv: _Invocation, index: int) -> str | None:
        """The same manual deduction twice, seconds apart, in two invocations."""
        user = self._fault_user(inv, 12)
        if user is None:
            return None
        net = self._net(user, "MANUAL_DEDUCTION")
        first = self._tx(user, inv.ms, "DEBIT", "MANUAL_DEDUCTION", "DELIVERY_DEDUCTION", net=net)
        self._transaction(inv, first)
        self._commit(first)
        first_ms = inv.ms

        def again(later: _Invocation) -> None:
            user.busy = False
            second = self._tx(user, later.ms, "DEBIT", "MANUAL_DEDUCTION", "DELIVERY_DEDUCTION", net=net)
            self._transaction(later, second)
            self._commit(second)
            self._fault_at(later, "rapid_manual_deduction", [first, second], amount=js_number(first.amount),
                           seconds=(later.ms - first_ms) / 1000)

        self._defer(inv.ms + self.tick(8_000, 40_000), user, again)
        return _FIRED

    def _item_duplicate_tx_id(self, inv: _Invocation, index: int) -> str | None:
        """One transaction id applied twice, minutes apart, both times published."""
        user = self._fault_user(inv, 12)
        if user is None:
            return None
        tx = self._tx(user, inv.ms, "DEBIT", "MANUAL_DEDUCTION", "DELIVERY_DEDUCTION")
        self._transaction(inv, tx)
        self._commit(tx)
        first = inv.stream.path

        def again(later: _Invocation) -> None:
            user.busy = False
            old = user.balance
            second = tx.copy(old=old, new=old - (tx.amount - tx.vat), payment=old - (tx.amount - tx.vat))
            self._transaction(later, second)
            self._commit(second)
            self._fault_at(later, "duplicate_tx_id", [second], first_file=first, outcome="applied")

        self._defer(inv.ms + self.tick(120_000, 1_200_000), user, again)
        return _FIRED

    def _item_mad_spike(self, inv: _Invocation, index: int) -> str | None:
        """A deduction twelve times the user's usual amount, on a user with a history of deductions to
        compare with (the product's MAD check compares a user's amounts of one direction).

        When users are so many that none has such a history, the busiest one
        takes it once no clean transaction is left to build one.
        """
        pool = self.experienced or ([self.busiest] if self.busiest and self._clean_budget() == 0 else [])
        user = self._fault_user(inv, 14, pool=pool)
        if user is None:
            return None
        tx = self._tx(user, inv.ms, "DEBIT", "MANUAL_DEDUCTION", "COMPENSATION", scale=12)
        self._transaction(inv, tx)
        self._commit(tx)
        self._fault_at(inv, "mad_spike", [tx], amount=js_number(tx.amount), usual_amount=js_number(user.unit))
        return _FIRED

    def _item_out_of_sync(self, inv: _Invocation, index: int) -> str | None:
        """paymentBalance apart from newBalance, followed by the not-in-sync ERROR."""
        user = self._fault_user(inv)
        if user is None:
            return None
        tx = self._tx(user, inv.ms, "DEBIT", "MANUAL_DEDUCTION", "DELIVERY_DEDUCTION")
        gap = user.unit * self.rng.randint(3, 12)
        tx.payment = -gap if index % 2 else tx.new + gap  # every other one has a negative wallet
        self._transaction(inv, tx)
        self._commit(tx)
        self._fault_at(inv, "out_of_sync", [tx], new_balance=js_number(tx.new),
                       payment_balance=js_number(tx.payment))
        return _FIRED

    def _item_sync_failed(self, inv: _Invocation, index: int) -> str | None:
        """The sync throws a TypeError after the block: not applied, the chain stays put."""
        user = self._fault_user(inv)
        if user is None:
            return None
        tx = self._tx(user, inv.ms, "DEBIT", "MANUAL_DEDUCTION", "DELIVERY_DEDUCTION")
        self._transaction(inv, tx, outcome="failed")
        self._fault_at(inv, "sync_failed", [tx], outcome="failed")
        return _FIRED

    def _item_malformed_block(self, inv: _Invocation, index: int) -> str | None:
        """A block a parser must reject: cut off before its end, or with a value that is no number."""
        user = self._fault_user(inv)
        if user is None:
            return None
        tx = self._tx(user, inv.ms, "DEBIT", "MANUAL_DEDUCTION", "DELIVERY_DEDUCTION")
        text = tx.block(True)
        if index % 2:
            defect = "garbage_value"
            amount = f"    amount: {js_number(tx.amount)}"
            text = text.replace(f"{amount},", f"{amount}.{self.tick(1, 9)}.5,")
        else:
            defect = "unterminated"
            text = text[: text.index("\n    newBalance")]
        self._processing(inv)
        inv.app("start_syncing", "INFO", text)
        self.malformed += 1
        user.last_ms = inv.ms
        self._fault_at(inv, "malformed_block", [tx], defect=defect)
        return _FIRED

    def _item_invoke_error(self, inv: _Invocation, index: int) -> str | None:
        """The Lambda crashes right after a block: its outcome is unknown, and it is that user's only one."""
        user = self.reserved_users["invoke_error"][index]
        tx = self._clean_tx(user, inv.ms)
        self._transaction(inv, tx, typed=self._typed(inv.ms), outcome="unknown")
        return _ENDED

    #: The writer of each scheduled item fired inside a regular invocation, other than the flavours
    #: (clean messages, see ``_clean_message``); each returns _FIRED, _ENDED or None (not now).
    _ITEMS = {
        "balance_mismatch": _item_balance_mismatch,
        "continuity_break": _item_continuity_break,
        "overdraft": _item_overdraft,
        "repeat_delivery": _item_repeat_delivery,
        "invalid_action": _item_invalid_action,
        "burst": _item_burst,
        "rapid_manual_deduction": _item_rapid_manual_deduction,
        "duplicate_tx_id": _item_duplicate_tx_id,
        "mad_spike": _item_mad_spike,
        "out_of_sync": _item_out_of_sync,
        "sync_failed": _item_sync_failed,
        "malformed_block": _item_malformed_block,
        "invoke_error": _item_invoke_error,
    }

    # ----------------------------------------------------------------- truth

    def _truth(self) -> GroundTruth:
        return GroundTruth(
            transactions=self.emitted,
            malformed=self.malformed,
            users=len(self.seen_users),
            per_currency=dict(sorted(self.per_currency.items())),
            old_shape=self.old_shape,
            json_form=self.json_form,
            outcomes={name: self.outcomes[name] for name in OUTCOMES},
            sync_errors=self.sync_errors,
            record_kinds=dict(sorted(self.kinds.items())),
            files=dict(self.files),
            faults=self.fault_log,
        )


_CUMULATIVE = {
    debit: [sum(weight for *_, weight in table[: i + 1]) for i in range(len(table))]
    for debit, table in ((True, _DEBITS), (False, _CREDITS))
}


def generate_export(out_dir: Path, *, transactions: int = 300, seed: int = 7, users: int | None = None,
                    faults: bool = True, gzip_ratio: float = 0.7) -> GroundTruth:
    """Write a log export under ``out_dir`` and return what a correct reader must find in it.

    ``out_dir`` must not already hold an export, so that the same arguments always
    give the same files. ``gzip_ratio`` is the share of log files written as gzip.
    """
    out_dir = Path(out_dir)
    for top in ("balance-sync-logs", "__MACOSX"):
        if (out_dir / top).exists():
            raise FileExistsError(f"{out_dir / top} exists; generate into an empty directory")
    return _Export(out_dir, transactions, seed, users, faults, gzip_ratio).run()


def main(argv: list[str] | None = None) -> int:
    """``calo-generate-logs OUT_DIR --transactions N --seed S``, or ``python -m calo_testkit.generator ...``."""
    parser = argparse.ArgumentParser(prog="calo-generate-logs",
                                     description="Write a realistic, seeded balance-sync log export.")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--transactions", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--users", type=int, default=None)
    parser.add_argument("--gzip-ratio", type=float, default=0.7)
    parser.add_argument("--no-faults", action="store_true", help="write a clean export")
    parser.add_argument("--truth", type=Path, help="also write the ground truth as JSON here")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    truth = generate_export(args.out_dir, transactions=args.transactions, seed=args.seed, users=args.users,
                            faults=not args.no_faults, gzip_ratio=args.gzip_ratio)
    if args.truth:
        truth.write(args.truth)
    print(f"{truth.transactions} transactions, {truth.users} users, {len(truth.faults)} faults, "
          f"{truth.files['written']} files in {args.out_dir} ({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
