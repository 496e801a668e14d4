"""Command and result types.

Amounts in commands are ``Decimal`` (or a decimal string, or an ``int`` meaning
whole units) in the unit of their currency: ``"50.00"`` USD, never minor
units. A ``float`` or ``bool`` is refused with ``TypeError`` when the command is
encoded. Ids are ``int`` (1 to 2**128 - 1) or ``uuid.UUID``.

Results give amounts as ``Decimal`` scaled by their currency (an amount whose
currency the server does not know is given unscaled, in minor units).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Optional, Sequence, Tuple, Union

Id = Union[int, uuid.UUID]
Amount = Union[Decimal, str, int]

POLICIES = ("no_overdraft", "overdraft_limit", "unrestricted")
ACCOUNT_STATES = ("active", "frozen", "closed")
SIDES = ("debit", "credit")
CONDITIONS = (None, "available_at_least", "balance_at_most")
LIEN_STATUSES = ("active", "captured", "released", "expired")
EVENT_STATES = ("created", "running", "compensating", "completed", "compensated", "failed", "timed_out")
STEP_STATUSES = ("pending", "applied", "awaiting_confirmation", "confirming", "compensated", "failed")
OUTCOME_KINDS = ("committed", "duplicate", "rejected")
ENTRY_STATUSES = ("unknown", "committed", "rejected")


# ---------------------------------------------------------------- commands


@dataclass(frozen=True)
class Condition:
    """A line's condition: ``available_at_least`` (available >= value after
    the entry) or ``balance_at_most`` (balance <= value after the entry).
    ``value`` is an amount of the line's currency; it may be zero or negative."""

    kind: str
    value: Amount

    @staticmethod
    def available_at_least(value: Amount) -> "Condition":
        return Condition("available_at_least", value)

    @staticmethod
    def balance_at_most(value: Amount) -> "Condition":
        return Condition("balance_at_most", value)


@dataclass(frozen=True)
class Line:
    account: Id
    side: str  # "debit" | "credit"
    amount: Amount
    currency: str
    expected_version: Optional[int] = None  # the account's version before this entry
    condition: Optional[Condition] = None


@dataclass(frozen=True)
class Transfer:
    """Tag 1: an entry of two lines, debit ``from_account``, credit
    ``to_account``, of the same amount and currency."""

    id: Id
    from_account: Id
    to_account: Id
    amount: Amount
    currency: str
    user_data: Id = 0

    @property
    def lines(self) -> Tuple[Line, Line]:
        return (
            Line(self.from_account, "debit", self.amount, self.currency),
            Line(self.to_account, "credit", self.amount, self.currency),
        )


@dataclass(frozen=True)
class Entry:
    """Tag 2: the general entry (2 to 128 lines)."""

    id: Id
    lines: Sequence[Line]
    reference: Optional[str] = None
    user_data: Id = 0
    corrects: Optional[Id] = None
    allow_repeat_correction: bool = False


@dataclass(frozen=True)
class CreateLien:
    """Tag 3: hold ``amount`` of ``account`` (its available balance drops)."""

    id: Id
    account: Id
    amount: Amount
    currency: str
    owner: Id = 0
    user_data: Id = 0
    expires_in_ns: Optional[int] = None  # lifetime from its log time, at most 366 days


@dataclass(frozen=True)
class Credit:
    account: Id
    amount: Amount


@dataclass(frozen=True)
class CaptureLien:
    """Tag 4: post an entry ``entry_id`` taking the lien's money to ``credits``."""

    lien: Id
    account: Id  # the lien's account
    entry_id: Id
    currency: str
    credits: Sequence[Credit]  # Credit or (account, amount) pairs
    reference: Optional[str] = None


@dataclass(frozen=True)
class ReleaseLien:
    """Tag 5."""

    lien: Id
    account: Id


@dataclass(frozen=True)
class CreateCurrency:
    """Tag 6."""

    code: str
    scale: int


@dataclass(frozen=True)
class CreateAccount:
    """Tag 7. ``overdraft_limit`` (an amount of ``currency``) only with policy
    ``overdraft_limit``."""

    id: Id
    currency: str
    policy: str = "no_overdraft"
    overdraft_limit: Optional[Amount] = None
    user_data: Id = 0


@dataclass(frozen=True)
class SetAccountState:
    """Tag 8: ``state`` is "active", "frozen" or "closed"."""

    account: Id
    state: str


@dataclass(frozen=True)
class Chain:
    """Tag 9: operations (Transfer, Entry, CreateLien, CaptureLien,
    ReleaseLien) applied all or none."""

    id: Id
    ops: Sequence["Operation"]


# Event commands (tag 10). Amounts here are minor units (an event step does
# not name its currency in the command).


@dataclass(frozen=True)
class EventCreate:
    event: Id
    name: str
    description: str = ""
    timeout_ns: Optional[int] = None
    metadata: str = "{}"
    retries: int = 0
    retry_delay_ns: int = 0


@dataclass(frozen=True)
class EventAddStep:
    event: Id
    name: str
    type: str
    payload: str = "{}"
    order: int = 0
    description: str = ""


@dataclass(frozen=True)
class EventStart:
    event: Id


@dataclass(frozen=True)
class EventConfirm:
    event: Id
    step: str
    amount: Optional[int] = None  # minor units; None: capture all


@dataclass(frozen=True)
class EventFail:
    event: Id
    step: str
    reason: str


@dataclass(frozen=True)
class EventRecord:
    """Tag 10 kind 5 (the server's event driver only; seen in records). The
    FACT is kept as raw bytes."""

    event: int
    fact: bytes


@dataclass(frozen=True)
class Tick:
    """Tag 11: the server's own (seen in records)."""


@dataclass(frozen=True)
class RawCommand:
    """A command whose tag this client does not decode: its bytes, whole."""

    tag: int
    data: bytes


Operation = Union[Transfer, Entry, CreateLien, CaptureLien, ReleaseLien]
Command = Union[
    Transfer, Entry, CreateLien, CaptureLien, ReleaseLien, CreateCurrency, CreateAccount,
    SetAccountState, Chain, EventCreate, EventAddStep, EventStart, EventConfirm, EventFail,
]


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class Outcome:
    """The outcome of one submitted command."""

    status: str  # "committed" | "duplicate" | "rejected"
    code: int = 0  # 0 when committed (a duplicate: the original's code)
    name: Optional[str] = None  # the stable error name, None when code is 0
    sequence: Optional[int] = None  # committed: its own; rejected: its own if sequenced; duplicate: the original's
    timestamp: Optional[int] = None  # committed only: ns since the Unix epoch
    text: Optional[str] = None
    op: Optional[int] = None  # the failing operation inside a chain
    line: Optional[int] = None  # the failing line of an entry
    subject: Optional[int] = None  # the account, lien or id concerned
    current_version: Optional[int] = None  # version_conflict: the account's version
    index: int = 0  # the command's position in the request
    sequenced: bool = False  # the command took a sequence number

    @property
    def ok(self) -> bool:
        """Committed, or a duplicate of a command that committed."""
        return self.code == 0 and self.status in ("committed", "duplicate")


@dataclass(frozen=True)
class OutcomeException:
    """An EXCEPTION of an ``Outcomes`` response, as on the wire."""

    index: int
    kind: int
    sequenced: bool
    code: int
    op: Optional[int]
    line: Optional[int]
    current_version: Optional[int]
    text: Optional[str]
    seq: int
    subject: int
    timestamp: int


@dataclass(frozen=True)
class Outcomes:
    """The ``Outcomes`` response as on the wire (see ``codec.walk_outcomes``)."""

    count: int
    first_seq: int
    first_timestamp: int
    exceptions: Tuple[OutcomeException, ...]


@dataclass(frozen=True)
class Currency:
    code: str
    scale: int


@dataclass(frozen=True)
class Account:
    id: int
    currency: str
    scale: int
    policy: str
    state: str
    balance: Decimal
    available: Decimal
    reserved: Decimal
    debits_posted: Decimal
    credits_posted: Decimal
    overdraft_limit: Decimal
    user_data: int
    version: int
    created_seq: int
    created_ts: int


@dataclass(frozen=True)
class Lien:
    id: int
    account: int
    currency: str
    scale: int
    amount: Decimal
    captured: Decimal
    owner: int
    user_data: int
    created_seq: int
    created_ts: int
    deadline: Optional[int]
    status: str


@dataclass(frozen=True)
class Record:
    """A logged record. ``command`` is decoded when this client knows its tag
    (otherwise a ``RawCommand``); ``raw`` is the command's bytes."""

    seq: int
    timestamp: int
    original_seq: int
    code: int
    outcome: str  # "committed" | "duplicate" | "rejected"
    command: object
    raw: bytes = field(repr=False, default=b"")

    @property
    def name(self) -> Optional[str]:
        from .errors import error_name

        return error_name(self.code)


@dataclass(frozen=True)
class EntryInfo:
    """The answer to ``entry(id)``."""

    id: int
    status: str  # "unknown" | "committed" | "rejected"
    code: int
    name: Optional[str]
    sequence: Optional[int]
    record: Optional[Record]
    lines: Tuple[Line, ...]  # the entry's lines when the record holds it (else empty)
    reference: Optional[str] = None
    user_data: int = 0


@dataclass(frozen=True)
class StatementLine:
    debit: Decimal
    credit: Decimal
    balance: Decimal  # the posted balance after the record
    record: Record


@dataclass(frozen=True)
class Statement:
    account: int
    currency: Optional[Currency]
    next_from_seq: Optional[int]  # None: the last page so far
    lines: Tuple[StatementLine, ...]


@dataclass(frozen=True)
class Status:
    shards: int
    next_seq: int
    durable_seq: int
    history_from: int
    read_only: bool
    version: str


@dataclass(frozen=True)
class Finding:
    kind: str
    subject: str
    message: str


@dataclass(frozen=True)
class Verification:
    clean: bool
    full: bool
    cut_sequence: int
    accounts: int
    accounts_checked_against_log: int
    records_checked_against_index: int
    max_shard_pause_us: int
    duration_ms: int
    currencies: Tuple[Tuple[str, str], ...]
    errors: Tuple[Finding, ...]
    warnings: Tuple[Finding, ...]


@dataclass(frozen=True)
class Hotspots:
    window_s: int
    total_writes: int
    total_conflicts: int
    writes: Tuple[Tuple[int, int], ...]
    conflicts: Tuple[Tuple[int, int], ...]


@dataclass(frozen=True)
class EventSummary:
    id: int
    name: str
    state: str
    steps: int
    created_ts: int
    started_ts: int
    ended_ts: int
    deadline: Optional[int]
    failure: Optional[int]


@dataclass(frozen=True)
class ErrorResponse:
    code: int
    message: str

    @property
    def name(self) -> Optional[str]:
        from .errors import error_name

        return error_name(self.code)
