"""The byte layouts of `tally/2` (net/PROTOCOL.md): pure functions, no I/O.

Encoders take user-level values (ids as int/UUID, amounts as Decimal/str/int
in the unit of their currency) and a ``scale_of`` lookup (a mapping or a
callable, currency code -> scale or None) to turn amounts into minor units.
Decoders check what PROTOCOL.md asks a reader to check (lengths, reserved
bytes, booleans, enumerations, counts against the bytes left, UTF-8, currency
codes) and raise ``ProtocolError`` naming the offset rather than misread.
"""

from __future__ import annotations

import struct
import uuid
from decimal import Decimal
from typing import Callable, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from .errors import INVALID_AMOUNT, FRAME_TOO_LARGE, ProtocolError, TallyError, error_name
from .types import (
    ACCOUNT_STATES,
    CONDITIONS,
    ENTRY_STATUSES,
    EVENT_STATES,
    LIEN_STATUSES,
    OUTCOME_KINDS,
    POLICIES,
    SIDES,
    Account,
    CaptureLien,
    Chain,
    Condition,
    CreateAccount,
    CreateCurrency,
    CreateLien,
    Credit,
    Currency,
    Entry,
    EntryInfo,
    ErrorResponse,
    EventAddStep,
    EventConfirm,
    EventCreate,
    EventFail,
    EventRecord,
    EventStart,
    EventSummary,
    Finding,
    Hotspots,
    Lien,
    Line,
    Outcome,
    OutcomeException,
    Outcomes,
    RawCommand,
    Record,
    ReleaseLien,
    SetAccountState,
    Statement,
    StatementLine,
    Status,
    Tick,
    Transfer,
    Verification,
)

VERSION = 2
ALPN = "tally/2"
KIND_REQUEST = 1
KIND_RESPONSE = 2
HEADER_SIZE = 16
MAX_FRAME_BYTES = 8 * 1024 * 1024
MAX_COMMAND_BYTES = 1024 * 1024
MAX_BATCH_OPERATIONS = 8192
MAX_PAGE = 1000
MAX_AMOUNT = 2**127 - 1
MAX_U128 = 2**128 - 1
MAX_U64 = 2**64 - 1
I128_MIN = -(2**127)
I128_MAX = 2**127 - 1

# request types
REQ_SUBMIT = 1
REQ_ACCOUNT = 2
REQ_ENTRY = 3
REQ_LIEN = 4
REQ_CURRENCY = 5
REQ_STATEMENT = 6
REQ_FIND = 7
REQ_SUBSCRIBE = 8
REQ_STATUS = 9
REQ_VERIFY = 10
REQ_HOTSPOTS = 11
REQ_EVENT = 12
REQ_EVENTS = 13

# response types
RESP_OUTCOMES = 1
RESP_ACCOUNT = 2
RESP_ENTRY = 3
RESP_LIEN = 4
RESP_CURRENCY = 5
RESP_STATEMENT = 6
RESP_RECORDS = 7
RESP_STATUS = 8
RESP_VERIFICATION = 9
RESP_HOTSPOTS = 10
RESP_EVENT = 11
RESP_EVENTS = 12
RESP_ERROR = 255

# the response each request expects
EXPECTED_RESPONSE = {
    REQ_SUBMIT: RESP_OUTCOMES,
    REQ_ACCOUNT: RESP_ACCOUNT,
    REQ_ENTRY: RESP_ENTRY,
    REQ_LIEN: RESP_LIEN,
    REQ_CURRENCY: RESP_CURRENCY,
    REQ_STATEMENT: RESP_STATEMENT,
    REQ_FIND: RESP_RECORDS,
    REQ_SUBSCRIBE: RESP_RECORDS,
    REQ_STATUS: RESP_STATUS,
    REQ_VERIFY: RESP_VERIFICATION,
    REQ_HOTSPOTS: RESP_HOTSPOTS,
    REQ_EVENT: RESP_EVENT,
    REQ_EVENTS: RESP_EVENTS,
}

# command tags
TAG_TRANSFER = 1
TAG_ENTRY = 2
TAG_CREATE_LIEN = 3
TAG_CAPTURE_LIEN = 4
TAG_RELEASE_LIEN = 5
TAG_CREATE_CURRENCY = 6
TAG_CREATE_ACCOUNT = 7
TAG_SET_ACCOUNT_STATE = 8
TAG_CHAIN = 9
TAG_EVENT = 10
TAG_TICK = 11

FIND_REFERENCE = 0
FIND_ENTRY_USER_DATA = 1
FIND_ACCOUNT_USER_DATA = 2

_HEADER = struct.Struct("<IBBHQ")

ScaleOf = Union[None, Mapping[str, int], Callable[[str], Optional[int]]]


# ---------------------------------------------------------------- values


def _scale_fn(scale_of: ScaleOf) -> Callable[[str], Optional[int]]:
    if scale_of is None:
        return lambda code: None
    if callable(scale_of) and not isinstance(scale_of, Mapping):
        return scale_of
    return lambda code: scale_of.get(code)  # type: ignore[union-attr]


def to_id(value, what: str = "id", *, allow_zero: bool = False) -> int:
    """An id as its u128 value: an int, or a UUID's 16 bytes read big-endian."""
    if isinstance(value, bool):
        raise TypeError(f"{what}: a bool is not an id")
    if isinstance(value, uuid.UUID):
        n = value.int
    elif isinstance(value, int):
        n = value
    else:
        raise TypeError(f"{what}: an id is an int or a uuid.UUID, not {type(value).__name__}")
    low = 0 if allow_zero else 1
    if not low <= n <= MAX_U128:
        raise ValueError(f"{what}: {n} is out of range ({low} to 2**128 - 1)")
    return n


def to_minor(
    amount,
    scale: Optional[int],
    *,
    what: str = "amount",
    currency: str = "",
    allow_zero: bool = False,
    signed: bool = False,
) -> int:
    """A Decimal / decimal string / int (whole units) as exact minor units.

    A float or bool raises TypeError. More decimals than the scale, zero (unless
    ``allow_zero``), negative (unless ``signed``) or out of range raise
    TallyError 2 ``invalid_amount``. ``scale`` None (a currency the server does
    not know) takes whole numbers as they are and refuses fractions.
    """
    if isinstance(amount, bool) or isinstance(amount, float):
        raise TypeError(f"{what}: {type(amount).__name__} amounts are not allowed; use Decimal or a decimal string")
    if isinstance(amount, Decimal):
        d = amount
    elif isinstance(amount, int):
        d = Decimal(amount)
    elif isinstance(amount, str):
        try:
            d = Decimal(amount.strip())
        except Exception:
            raise TallyError(INVALID_AMOUNT, "invalid_amount", f"{what}: {amount!r} is not a decimal number") from None
    else:
        raise TypeError(f"{what}: an amount is a Decimal or a decimal string, not {type(amount).__name__}")
    if not d.is_finite():
        raise TallyError(INVALID_AMOUNT, "invalid_amount", f"{what}: {amount!r} is not a finite number")
    sign, digits, exponent = d.as_tuple()
    n = 0
    for digit in digits:
        n = n * 10 + digit
    s = 0 if scale is None else scale
    shift = exponent + s
    if shift >= 0:
        if shift > 200:  # certainly out of range; avoid a huge power of ten
            n = n and MAX_U128 * 10
        else:
            n *= 10**shift
    else:
        div = 10 ** (-shift)
        if n % div:
            if scale is None:
                msg = f"{what}: {amount} has decimals, and currency {currency!r} is not known to the server (no scale)"
            else:
                msg = f"{what}: {amount} has more decimals than {currency or 'the currency'}'s scale {scale}"
            raise TallyError(INVALID_AMOUNT, "invalid_amount", msg)
        n //= div
    if sign:
        n = -n
    if signed:
        if not I128_MIN <= n <= I128_MAX:
            raise TallyError(INVALID_AMOUNT, "invalid_amount", f"{what}: {amount} is out of range")
        return n
    if n < 0:
        raise TallyError(INVALID_AMOUNT, "invalid_amount", f"{what}: {amount} is negative")
    if n == 0 and not allow_zero:
        raise TallyError(INVALID_AMOUNT, "invalid_amount", f"{what}: zero")
    if n > MAX_AMOUNT:
        raise TallyError(INVALID_AMOUNT, "invalid_amount", f"{what}: {amount} is over 2**127 - 1 minor units")
    return n


def from_minor(n: int, scale: Optional[int]) -> Decimal:
    """Minor units as an exact Decimal in the currency's unit (scale None: as is)."""
    return Decimal(f"{n}e-{scale or 0}")


def _u128(n: int) -> bytes:
    return n.to_bytes(16, "little")


def _i128(n: int) -> bytes:
    return n.to_bytes(16, "little", signed=True)


def encode_code8(code: str) -> bytes:
    if not isinstance(code, str):
        raise TypeError(f"a currency code is a str, not {type(code).__name__}")
    if not 1 <= len(code) <= 8 or any(c not in "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789" for c in code):
        raise ValueError(f"currency code {code!r}: 1 to 8 characters A-Z 0-9")
    return code.encode("ascii").ljust(8, b"\0")


def _u16_len(text: Optional[str], what: str) -> bytes:
    b = b"" if text is None else text.encode("utf-8")
    if len(b) > 0xFFFF:
        raise ValueError(f"{what}: {len(b)} bytes does not fit a u16 length")
    return b


def _str(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack("<I", len(b)) + b


def _enum(value: str, values: Sequence, what: str) -> int:
    try:
        return list(values).index(value)
    except ValueError:
        raise ValueError(f"{what}: {value!r} is not one of {', '.join(str(v) for v in values if v is not None)}") from None


# ---------------------------------------------------------------- frames


def encode_frame(frame_id: int, body: bytes, kind: int = KIND_REQUEST) -> bytes:
    if len(body) > MAX_FRAME_BYTES:
        raise TallyError(FRAME_TOO_LARGE, "frame_too_large", f"a {len(body)}-byte body is over {MAX_FRAME_BYTES}")
    if not 0 <= frame_id <= MAX_U64:
        raise ValueError("frame id out of range")
    return _HEADER.pack(len(body), VERSION, kind, 0, frame_id) + body


def decode_frame_header(header: bytes, kind: int = KIND_RESPONSE) -> Tuple[int, int]:
    """(body length, frame id) of a 16-byte header; ProtocolError when the
    header cannot be trusted."""
    if len(header) != HEADER_SIZE:
        raise ProtocolError(f"frame header: {len(header)} bytes, not 16")
    length, version, k, reserved, frame_id = _HEADER.unpack(header)
    if version != VERSION:
        raise ProtocolError(f"frame header: version {version}, not {VERSION}")
    if k != kind:
        raise ProtocolError(f"frame header: kind {k}, expected {kind}")
    if reserved:
        raise ProtocolError("frame header: non-zero reserved bytes at offset 6")
    if length > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame header: length {length} is over MAX_FRAME_BYTES")
    return length, frame_id


def split_frames(buf: bytes, kind: int = KIND_RESPONSE) -> Tuple[List[Tuple[int, bytes]], bytes]:
    """Complete frames at the start of ``buf`` as (id, body), and the rest."""
    frames = []
    off = 0
    while len(buf) - off >= HEADER_SIZE:
        length, frame_id = decode_frame_header(bytes(buf[off : off + HEADER_SIZE]), kind)
        if len(buf) - off - HEADER_SIZE < length:
            break
        frames.append((frame_id, bytes(buf[off + HEADER_SIZE : off + HEADER_SIZE + length])))
        off += HEADER_SIZE + length
    return frames, bytes(buf[off:])


# ---------------------------------------------------------------- commands


def encode_command(cmd, scale_of: ScaleOf = None) -> bytes:
    """One COMMAND's bytes."""
    scale = _scale_fn(scale_of)
    return _encode_command(cmd, scale, top=True)


def _amount(value, cur: str, scale, what: str, **kw) -> int:
    return to_minor(value, scale(cur), what=what, currency=cur, **kw)


def _encode_command(cmd, scale, top: bool) -> bytes:
    if isinstance(cmd, Transfer):
        return (
            b"\x01" + bytes(7)
            + _u128(to_id(cmd.id, "transfer id"))
            + _u128(to_id(cmd.from_account, "from_account"))
            + _u128(to_id(cmd.to_account, "to_account"))
            + _u128(_amount(cmd.amount, cmd.currency, scale, "transfer amount"))
            + encode_code8(cmd.currency)
            + _u128(to_id(cmd.user_data, "user_data", allow_zero=True))
        )
    if isinstance(cmd, Entry):
        lines = list(cmd.lines)
        if len(lines) > 0xFFFF:
            raise ValueError("an entry's line count must fit a u16")
        ref = _u16_len(cmd.reference, "reference")
        flags = (1 if cmd.corrects is not None else 0) | (2 if cmd.allow_repeat_correction else 0) | (
            4 if cmd.reference is not None else 0
        )
        out = [
            struct.pack("<BBHHH", TAG_ENTRY, flags, len(lines), len(ref), 0),
            _u128(to_id(cmd.id, "entry id")),
            _u128(to_id(cmd.user_data, "user_data", allow_zero=True)),
            _u128(0 if cmd.corrects is None else to_id(cmd.corrects, "corrects")),
        ]
        for i, line in enumerate(lines):
            out.append(_encode_line(line, scale, i))
        out.append(ref)
        return b"".join(out)
    if isinstance(cmd, CreateLien):
        flags = 0 if cmd.expires_in_ns is None else 1
        exp = cmd.expires_in_ns or 0
        if isinstance(exp, bool) or not isinstance(exp, int) or not 0 <= exp <= MAX_U64:
            raise ValueError("expires_in_ns: an int of nanoseconds (u64)")
        return (
            struct.pack("<BB6x", TAG_CREATE_LIEN, flags)
            + _u128(to_id(cmd.id, "lien id"))
            + _u128(to_id(cmd.account, "account"))
            + _u128(_amount(cmd.amount, cmd.currency, scale, "lien amount"))
            + _u128(to_id(cmd.owner, "owner", allow_zero=True))
            + _u128(to_id(cmd.user_data, "user_data", allow_zero=True))
            + encode_code8(cmd.currency)
            + struct.pack("<Q", exp)
        )
    if isinstance(cmd, CaptureLien):
        credits = [c if isinstance(c, Credit) else Credit(*c) for c in cmd.credits]
        if len(credits) > 0xFFFF:
            raise ValueError("a capture's credit count must fit a u16")
        ref = _u16_len(cmd.reference, "reference")
        out = [
            struct.pack("<BBHHH", TAG_CAPTURE_LIEN, 0 if cmd.reference is None else 1, len(credits), len(ref), 0),
            _u128(to_id(cmd.lien, "lien")),
            _u128(to_id(cmd.account, "account")),
            _u128(to_id(cmd.entry_id, "entry_id")),
            encode_code8(cmd.currency),
        ]
        for i, c in enumerate(credits):
            out.append(_u128(to_id(c.account, f"credit {i} account")))
            out.append(_u128(_amount(c.amount, cmd.currency, scale, f"credit {i} amount")))
        out.append(ref)
        return b"".join(out)
    if isinstance(cmd, ReleaseLien):
        return b"\x05" + bytes(7) + _u128(to_id(cmd.lien, "lien")) + _u128(to_id(cmd.account, "account"))
    if not top:
        raise TypeError(f"a chain holds Transfer, Entry, CreateLien, CaptureLien or ReleaseLien, not {type(cmd).__name__}")
    if isinstance(cmd, CreateCurrency):
        if isinstance(cmd.scale, bool) or not isinstance(cmd.scale, int) or not 0 <= cmd.scale <= 18:
            raise ValueError("scale: an int from 0 to 18")
        return struct.pack("<BB6x", TAG_CREATE_CURRENCY, cmd.scale) + encode_code8(cmd.code)
    if isinstance(cmd, CreateAccount):
        policy = _enum(cmd.policy, POLICIES, "policy")
        if policy == 1:
            if cmd.overdraft_limit is None:
                raise ValueError("policy overdraft_limit needs overdraft_limit=")
            limit = _amount(cmd.overdraft_limit, cmd.currency, scale, "overdraft_limit", allow_zero=True)
        else:
            if cmd.overdraft_limit is not None:
                # a float still raises TypeError; only a zero limit goes with another policy
                if to_minor(cmd.overdraft_limit, None, what="overdraft_limit", allow_zero=True, signed=True) != 0:
                    raise ValueError("overdraft_limit is only for policy 'overdraft_limit'")
            limit = 0
        return (
            struct.pack("<BB6x", TAG_CREATE_ACCOUNT, policy)
            + _u128(to_id(cmd.id, "account id"))
            + _u128(to_id(cmd.user_data, "user_data", allow_zero=True))
            + _u128(limit)
            + encode_code8(cmd.currency)
        )
    if isinstance(cmd, SetAccountState):
        state = _enum(cmd.state, ACCOUNT_STATES, "state")
        return struct.pack("<BB6x", TAG_SET_ACCOUNT_STATE, state) + _u128(to_id(cmd.account, "account"))
    if isinstance(cmd, Chain):
        ops = list(cmd.ops)
        body = [_encode_command(op, scale, top=False) for op in ops]
        return struct.pack("<B3xI", TAG_CHAIN, len(ops)) + _u128(to_id(cmd.id, "chain id")) + b"".join(body)
    if isinstance(cmd, (EventCreate, EventAddStep, EventStart, EventConfirm, EventFail)):
        return _encode_event(cmd)
    if isinstance(cmd, RawCommand):
        return bytes(cmd.data)
    raise TypeError(f"not a command: {type(cmd).__name__}")


def _encode_line(line: Line, scale, i: int) -> bytes:
    if not isinstance(line, Line):
        raise TypeError(f"line {i}: a Line, not {type(line).__name__}")
    side = _enum(line.side, SIDES, f"line {i} side")
    cond = line.condition
    if cond is None:
        ckind, cvalue = 0, 0
    else:
        if isinstance(cond, tuple):
            cond = Condition(*cond)
        ckind = _enum(cond.kind, CONDITIONS, f"line {i} condition")
        if ckind == 0:
            cvalue = 0
        else:
            cvalue = to_minor(cond.value, scale(line.currency), what=f"line {i} condition value",
                              currency=line.currency, signed=True)
    ev = line.expected_version
    if ev is not None and (isinstance(ev, bool) or not isinstance(ev, int) or not 0 <= ev <= MAX_U64):
        raise ValueError(f"line {i} expected_version: a u64 int")
    return (
        _u128(to_id(line.account, f"line {i} account"))
        + _u128(_amount(line.amount, line.currency, scale, f"line {i} amount"))
        + _i128(cvalue)
        + encode_code8(line.currency)
        + struct.pack("<QBBB5x", ev or 0, side, 0 if ev is None else 1, ckind)
    )


def _encode_event(cmd) -> bytes:
    def u64(v, what):
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_U64:
            raise ValueError(f"{what}: a u64 int")
        return struct.pack("<Q", v)

    if isinstance(cmd, EventCreate):
        kind = 0
        if isinstance(cmd.retries, bool) or not isinstance(cmd.retries, int) or not 0 <= cmd.retries <= 255:
            raise ValueError("retries: a u8 int")
        fields = (
            _str(cmd.name) + _str(cmd.description)
            + (b"\0" if cmd.timeout_ns is None else b"\x01" + u64(cmd.timeout_ns, "timeout_ns"))
            + _str(cmd.metadata) + bytes([cmd.retries]) + u64(cmd.retry_delay_ns, "retry_delay_ns")
        )
    elif isinstance(cmd, EventAddStep):
        kind = 1
        if isinstance(cmd.order, bool) or not isinstance(cmd.order, int) or not 0 <= cmd.order <= 0xFFFFFFFF:
            raise ValueError("order: a u32 int")
        fields = _str(cmd.name) + _str(cmd.description) + _str(cmd.type) + struct.pack("<I", cmd.order) + _str(cmd.payload)
    elif isinstance(cmd, EventStart):
        kind = 2
        fields = b""
    elif isinstance(cmd, EventConfirm):
        kind = 3
        if cmd.amount is None:
            amount = b"\0"
        else:
            if isinstance(cmd.amount, bool) or not isinstance(cmd.amount, int) or not 0 <= cmd.amount <= MAX_U128:
                raise TypeError("EventConfirm.amount: an int of minor units")
            amount = b"\x01" + _u128(cmd.amount)
        fields = _str(cmd.step) + amount
    else:
        kind = 4
        fields = _str(cmd.step) + _str(cmd.reason)
    return struct.pack("<BB6x", TAG_EVENT, kind) + _u128(to_id(cmd.event, "event")) + fields


# ---------------------------------------------------------------- requests


def encode_submit(commands: Iterable, scale_of: ScaleOf = None) -> bytes:
    scale = _scale_fn(scale_of)
    parts = [_encode_command(c, scale, top=True) for c in commands]
    return struct.pack("<B3xI", REQ_SUBMIT, len(parts)) + b"".join(parts)


def _by_id(req_type: int, value, what: str) -> bytes:
    return struct.pack("<B3xI", req_type, 0) + _u128(to_id(value, what))


def encode_account_request(account) -> bytes:
    return _by_id(REQ_ACCOUNT, account, "account")


def encode_entry_request(entry) -> bytes:
    return _by_id(REQ_ENTRY, entry, "entry")


def encode_lien_request(lien) -> bytes:
    return _by_id(REQ_LIEN, lien, "lien")


def encode_event_request(event) -> bytes:
    return _by_id(REQ_EVENT, event, "event")


def encode_currency_request(code: str) -> bytes:
    return struct.pack("<B3xI", REQ_CURRENCY, 0) + encode_code8(code)


def _u32(v, what) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 0xFFFFFFFF:
        raise ValueError(f"{what}: a u32 int")
    return v


def _u64(v, what) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_U64:
        raise ValueError(f"{what}: a u64 int")
    return v


def encode_statement_request(account, from_seq: int = 1, limit: int = MAX_PAGE) -> bytes:
    return (
        struct.pack("<B3xI", REQ_STATEMENT, _u32(limit, "limit"))
        + _u128(to_id(account, "account"))
        + struct.pack("<Q", _u64(from_seq, "from_seq"))
    )


def encode_find_request(key_kind: int, key, from_ts: int = 0, to_ts: int = MAX_U64, limit: int = MAX_PAGE) -> bytes:
    head = struct.pack(
        "<B3xIQQB7x", REQ_FIND, _u32(limit, "limit"), _u64(from_ts, "from_ts"), _u64(to_ts, "to_ts"), key_kind
    )
    if key_kind == FIND_REFERENCE:
        if not isinstance(key, str):
            raise TypeError("a reference is a str")
        return head + _str(key)
    if key_kind in (FIND_ENTRY_USER_DATA, FIND_ACCOUNT_USER_DATA):
        return head + _u128(to_id(key, "user_data", allow_zero=True))
    raise ValueError(f"find key kind {key_kind}: 0, 1 or 2")


def encode_subscribe_request(from_seq: int = 1) -> bytes:
    return struct.pack("<B3xIQ", REQ_SUBSCRIBE, 0, _u64(from_seq, "from_seq"))


def encode_status_request() -> bytes:
    return struct.pack("<B3x", REQ_STATUS)


def encode_verify_request(full: bool = False) -> bytes:
    return struct.pack("<B3xB3x", REQ_VERIFY, 1 if full else 0)


def encode_hotspots_request(top: int = 10, window_s: int = 60) -> bytes:
    return struct.pack("<B3xIQ", REQ_HOTSPOTS, _u32(top, "top"), _u64(window_s, "window_s"))


def encode_events_request(limit: int = 100, older_than_s: int = 0, state: Optional[str] = None) -> bytes:
    st = 255 if state is None else _enum(state, EVENT_STATES, "state")
    return struct.pack("<B3xIQB7x", REQ_EVENTS, _u32(limit, "limit"), _u64(older_than_s, "older_than_s"), st)


# ---------------------------------------------------------------- reading


class Reader:
    """A cursor over bytes that checks as it reads; errors name the offset."""

    __slots__ = ("b", "o", "what", "base")

    def __init__(self, data: bytes, what: str, base: int = 0):
        self.b = data
        self.o = 0
        self.what = what
        self.base = base

    def fail(self, msg: str, at: Optional[int] = None):
        off = self.base + (self.o if at is None else at)
        raise ProtocolError(f"{self.what}: {msg} at offset {off}")

    def remaining(self) -> int:
        return len(self.b) - self.o

    def need(self, n: int, field: str) -> None:
        if len(self.b) - self.o < n:
            self.fail(f"{field}: needs {n} bytes, {len(self.b) - self.o} left")

    def take(self, n: int, field: str) -> bytes:
        self.need(n, field)
        v = self.b[self.o : self.o + n]
        self.o += n
        return bytes(v)

    def u8(self, field: str) -> int:
        self.need(1, field)
        v = self.b[self.o]
        self.o += 1
        return v

    def u16(self, field: str) -> int:
        return int.from_bytes(self.take(2, field), "little")

    def u32(self, field: str) -> int:
        return int.from_bytes(self.take(4, field), "little")

    def u64(self, field: str) -> int:
        return int.from_bytes(self.take(8, field), "little")

    def u128(self, field: str) -> int:
        return int.from_bytes(self.take(16, field), "little")

    def i128(self, field: str) -> int:
        return int.from_bytes(self.take(16, field), "little", signed=True)

    def reserved(self, n: int, field: str = "reserved") -> None:
        at = self.o
        if any(self.take(n, field)):
            self.fail(f"{field}: non-zero reserved byte", at)

    def bool(self, field: str) -> bool:
        at = self.o
        v = self.u8(field)
        if v > 1:
            self.fail(f"{field}: bool is {v}", at)
        return v == 1

    def enum(self, field: str, values: Sequence) -> int:
        at = self.o
        v = self.u8(field)
        if v >= len(values):
            self.fail(f"{field}: {v} is not a known value", at)
        return v

    def flags(self, field: str, allowed: int) -> int:
        at = self.o
        v = self.u8(field)
        if v & ~allowed:
            self.fail(f"{field}: unknown flag bits {v & ~allowed:#04x}", at)
        return v

    def code8(self, field: str = "currency") -> str:
        at = self.o
        raw = self.take(8, field)
        return _decode_code8(raw, lambda m: self.fail(f"{field}: {m}", at))

    def text(self, n: int, field: str) -> str:
        at = self.o
        raw = self.take(n, field)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self.fail(f"{field}: not UTF-8", at)
            raise AssertionError  # unreachable

    def str(self, field: str) -> str:
        n = self.u32(field + " length")
        if n > self.remaining():
            self.fail(f"{field}: length {n} is over the {self.remaining()} bytes left")
        return self.text(n, field)

    def opt(self, field: str, read):
        return read() if self.bool(field + " present") else None

    def count(self, field: str, min_item: int) -> int:
        at = self.o
        n = self.u32(field)
        if min_item and n * min_item > self.remaining():
            self.fail(f"{field}: {n} items cannot fit the {self.remaining()} bytes left", at)
        return n

    def end(self) -> None:
        if self.o != len(self.b):
            self.fail(f"{len(self.b) - self.o} bytes left over")


def _decode_code8(raw: bytes, fail) -> str:
    n = raw.find(0)
    if n == -1:
        n = 8
    if n == 0:
        fail("empty currency code")
    if any(raw[n:]):
        fail("bytes after the code's zero padding")
    code = raw[:n]
    for ch in code:
        if not (0x41 <= ch <= 0x5A or 0x30 <= ch <= 0x39):
            fail(f"currency code byte {ch:#04x} is not A-Z 0-9")
    return code.decode("ascii")


def decode_code8(raw: bytes) -> str:
    def fail(m):
        raise ProtocolError(f"currency code: {m}")

    if len(raw) != 8:
        fail("not 8 bytes")
    return _decode_code8(raw, fail)


# ---------------------------------------------------------------- decoding commands


def decode_command(data: bytes, scale_of: ScaleOf = None, *, base: int = 0):
    """One COMMAND, exactly ``data``; a tag this client does not know gives a
    ``RawCommand``."""
    scale = _scale_fn(scale_of)
    if not data:
        raise ProtocolError(f"command: empty at offset {base}")
    tag = data[0]
    if tag not in range(1, 12):
        return RawCommand(tag, bytes(data))
    r = Reader(data, "command", base)
    cmd = _read_command(r, scale, top=True)
    r.end()
    return cmd


def _dec(n: int, cur: str, scale) -> Decimal:
    return from_minor(n, scale(cur))


def _read_command(r: Reader, scale, top: bool):
    start = r.o
    tag = r.u8("tag")
    if tag == TAG_TRANSFER:
        r.reserved(7)
        id_ = r.u128("id")
        debit = r.u128("debit_account")
        credit = r.u128("credit_account")
        amount = r.u128("amount")
        cur = r.code8()
        ud = r.u128("user_data")
        return Transfer(id_, debit, credit, _dec(amount, cur, scale), cur, ud)
    if tag == TAG_ENTRY:
        flags = r.flags("entry flags", 0b111)
        n = r.u16("line_count")
        ref_len = r.u16("reference_len")
        r.reserved(2)
        if not flags & 4 and ref_len:
            r.fail("reference_len is not zero but the reference flag is clear")
        id_ = r.u128("id")
        ud = r.u128("user_data")
        at = r.o
        corrects = r.u128("corrects")
        if not flags & 1 and corrects:
            r.fail("corrects is not zero but its flag is clear", at)
        r.need(72 * n + ref_len, f"{n} lines and the reference")
        lines = tuple(_read_line(r, scale, i) for i in range(n))
        ref = r.text(ref_len, "reference") if flags & 4 else None
        return Entry(id_, lines, ref, ud, corrects if flags & 1 else None, bool(flags & 2))
    if tag == TAG_CREATE_LIEN:
        flags = r.flags("lien flags", 1)
        r.reserved(6)
        id_ = r.u128("id")
        account = r.u128("account")
        amount = r.u128("amount")
        owner = r.u128("owner")
        ud = r.u128("user_data")
        cur = r.code8()
        at = r.o
        exp = r.u64("expires_in_ns")
        if not flags & 1 and exp:
            r.fail("expires_in_ns is not zero but its flag is clear", at)
        return CreateLien(id_, account, _dec(amount, cur, scale), cur, owner, ud, exp if flags & 1 else None)
    if tag == TAG_CAPTURE_LIEN:
        flags = r.flags("capture flags", 1)
        n = r.u16("credit_count")
        ref_len = r.u16("reference_len")
        r.reserved(2)
        if not flags & 1 and ref_len:
            r.fail("reference_len is not zero but the reference flag is clear")
        lien = r.u128("lien")
        account = r.u128("account")
        entry_id = r.u128("entry_id")
        cur = r.code8()
        r.need(32 * n + ref_len, f"{n} credits and the reference")
        credits = tuple(Credit(r.u128("credit account"), _dec(r.u128("credit amount"), cur, scale)) for _ in range(n))
        ref = r.text(ref_len, "reference") if flags & 1 else None
        return CaptureLien(lien, account, entry_id, cur, credits, ref)
    if tag == TAG_RELEASE_LIEN:
        r.reserved(7)
        return ReleaseLien(r.u128("lien"), r.u128("account"))
    if not top:
        r.fail(f"tag {tag} inside a chain (only 1 to 5)", start)
    if tag == TAG_CREATE_CURRENCY:
        at = r.o
        s = r.u8("scale")
        if s > 18:
            r.fail(f"scale {s} is over 18", at)
        r.reserved(6)
        return CreateCurrency(r.code8("code"), s)
    if tag == TAG_CREATE_ACCOUNT:
        policy = r.enum("policy", POLICIES)
        r.reserved(6)
        id_ = r.u128("id")
        ud = r.u128("user_data")
        at = r.o
        limit = r.u128("overdraft_limit")
        if policy != 1 and limit:
            r.fail("overdraft_limit is not zero but the policy is not overdraft_limit", at)
        cur = r.code8()
        return CreateAccount(id_, cur, POLICIES[policy], _dec(limit, cur, scale) if policy == 1 else None, ud)
    if tag == TAG_SET_ACCOUNT_STATE:
        state = r.enum("state", ACCOUNT_STATES)
        r.reserved(6)
        return SetAccountState(r.u128("account"), ACCOUNT_STATES[state])
    if tag == TAG_CHAIN:
        r.reserved(3)
        n = r.u32("op_count")
        id_ = r.u128("id")
        if n * 40 > r.remaining():
            r.fail(f"op_count {n} cannot fit the bytes left")
        ops = tuple(_read_command(r, scale, top=False) for _ in range(n))
        return Chain(id_, ops)
    if tag == TAG_EVENT:
        return _read_event(r, start)
    if tag == TAG_TICK:
        r.reserved(7)
        return Tick()
    raise AssertionError(tag)


def _read_line(r: Reader, scale, i: int) -> Line:
    f = f"line {i} "
    account = r.u128(f + "account")
    amount = r.u128(f + "amount")
    cvalue = r.i128(f + "condition_value")
    cur = r.code8(f + "currency")
    ev = r.u64(f + "expected_version")
    side = r.enum(f + "side", SIDES)
    flags = r.flags(f + "flags", 1)
    at = r.o
    ckind = r.enum(f + "condition", CONDITIONS)
    r.reserved(5, f + "reserved")
    if ckind == 0 and cvalue:
        r.fail(f + "condition_value is not zero with no condition", at)
    if not flags & 1 and ev:
        r.fail(f + "expected_version is not zero but its flag is clear", at)
    s = scale(cur)
    cond = None if ckind == 0 else Condition(CONDITIONS[ckind], from_minor(cvalue, s))
    return Line(account, SIDES[side], from_minor(amount, s), cur, ev if flags & 1 else None, cond)


def _read_event(r: Reader, start: int):
    kind = r.u8("event kind")
    r.reserved(6)
    event = r.u128("event")
    if kind == 0:
        name = r.str("name")
        desc = r.str("description")
        timeout = r.opt("timeout_ns", lambda: r.u64("timeout_ns"))
        meta = r.str("metadata")
        retries = r.u8("retries")
        delay = r.u64("retry_delay_ns")
        return EventCreate(event, name, desc, timeout, meta, retries, delay)
    if kind == 1:
        name = r.str("name")
        desc = r.str("description")
        typ = r.str("type")
        order = r.u32("order")
        payload = r.str("payload")
        return EventAddStep(event, name, typ, payload, order, desc)
    if kind == 2:
        return EventStart(event)
    if kind == 3:
        step = r.str("step")
        amount = r.opt("amount", lambda: r.u128("amount"))
        return EventConfirm(event, step, amount)
    if kind == 4:
        return EventFail(event, r.str("step"), r.str("reason"))
    if kind == 5:
        # FACT is kept raw; in a record, the command ends where command_len says.
        return EventRecord(event, r.take(r.remaining(), "fact"))
    # an event kind this client does not know: keep it whole
    data = bytes(r.b[start:])
    r.o = len(r.b)
    return RawCommand(TAG_EVENT, data)


def decode_submit_request(body: bytes, scale_of: ScaleOf = None) -> list:
    """The commands of a ``Submit`` body (the inverse of ``encode_submit``)."""
    scale = _scale_fn(scale_of)
    r = Reader(body, "Submit")
    if r.u8("type") != REQ_SUBMIT:
        r.fail("not a Submit", 0)
    r.reserved(3)
    n = r.count("count", 8)
    cmds = [_read_command(r, scale, top=True) for _ in range(n)]
    r.end()
    return cmds


# ---------------------------------------------------------------- responses


def decode_response(body: bytes, scale_of: ScaleOf = None):
    """A response body as (type, value). ``Error`` gives ``ErrorResponse``."""
    scale = _scale_fn(scale_of)
    r = Reader(body, "response")
    t = r.u8("type")
    r.reserved(3)
    dec = _RESPONSES.get(t)
    if dec is None:
        r.fail(f"unknown response type {t}", 0)
    r.what = _RESPONSE_NAMES[t]
    value = dec(r, scale)
    r.end()
    return t, value


def _resp_error(r: Reader, scale) -> ErrorResponse:
    code = r.u16("code")
    r.reserved(2)
    return ErrorResponse(code, r.str("message"))


def _resp_outcomes(r: Reader, scale) -> Outcomes:
    count = r.u32("count")
    nexc = r.u32("exception_count")
    r.reserved(4)
    first_seq = r.u64("first_seq")
    first_ts = r.u64("first_timestamp")
    if nexc > count:
        r.fail(f"exception_count {nexc} is over count {count}", 8)
    if nexc * 56 > r.remaining():
        r.fail(f"{nexc} exceptions cannot fit the {r.remaining()} bytes left", 8)
    exceptions = []
    last = -1
    for _ in range(nexc):
        at = r.o
        index = r.u32("index")
        if index <= last or index >= count:
            r.fail(f"exception index {index} is not increasing and below count {count}", at)
        last = index
        kind = r.enum("exception kind", OUTCOME_KINDS)
        flags = r.flags("exception flags", 0b11111)
        code = r.u16("code")
        op = r.u16("op")
        line = r.u16("line")
        text_len = r.u16("text_len")
        r.reserved(2)
        if not flags & 16 and text_len:
            r.fail("text_len is not zero but the text flag is clear", at + 12)
        seq = r.u64("seq")
        cv = r.u64("current_version")
        subject = r.u128("subject")
        ts = r.u64("timestamp")
        text = r.text(text_len, "text") if flags & 16 else None
        exceptions.append(
            OutcomeException(
                index=index, kind=kind, sequenced=bool(flags & 1), code=code,
                op=op if flags & 2 else None, line=line if flags & 4 else None,
                current_version=cv if flags & 8 else None, text=text,
                seq=seq, subject=subject, timestamp=ts,
            )
        )
    return Outcomes(count, first_seq, first_ts, tuple(exceptions))


def walk_outcomes(resp: Outcomes) -> List[Outcome]:
    """One Outcome per command, by PROTOCOL.md's walking rule: with k = 0, a
    command without an exception committed at first_seq + k (timestamp
    first_timestamp + k), then k += 1; a command with an exception whose
    ``sequenced`` flag is set also takes k += 1."""
    exc = {e.index: e for e in resp.exceptions}
    out: List[Outcome] = []
    k = 0
    for i in range(resp.count):
        e = exc.get(i)
        if e is None:
            if resp.first_seq == 0:
                raise ProtocolError(f"Outcomes: command {i} committed by the walking rule but first_seq is 0")
            out.append(Outcome("committed", 0, None, resp.first_seq + k, resp.first_timestamp + k, index=i, sequenced=True))
            k += 1
            continue
        if e.sequenced:
            k += 1
        status = OUTCOME_KINDS[e.kind]
        if e.kind == 0:
            seq, ts = e.seq, e.timestamp
        else:
            seq, ts = (e.seq or None), None
        out.append(
            Outcome(
                status=status, code=e.code, name=error_name(e.code), sequence=seq, timestamp=ts,
                text=e.text, op=e.op, line=e.line, subject=e.subject or None,
                current_version=e.current_version, index=i, sequenced=e.sequenced,
            )
        )
    return out


def _account_struct(r: Reader) -> Account:
    id_ = r.u128("id")
    debits = r.u128("debits_posted")
    credits = r.u128("credits_posted")
    reserved = r.u128("reserved")
    ud = r.u128("user_data")
    limit = r.u128("overdraft_limit")
    balance = r.i128("balance")
    available = r.i128("available")
    version = r.u64("version")
    created_seq = r.u64("created_seq")
    created_ts = r.u64("created_ts")
    cur = r.code8()
    at = r.o
    scale = r.u8("scale")
    if scale > 18:
        r.fail(f"scale {scale} is over 18", at)
    policy = r.enum("policy", POLICIES)
    state = r.enum("state", ACCOUNT_STATES)
    r.reserved(5)
    d = lambda n: from_minor(n, scale)  # noqa: E731
    return Account(
        id=id_, currency=cur, scale=scale, policy=POLICIES[policy], state=ACCOUNT_STATES[state],
        balance=d(balance), available=d(available), reserved=d(reserved), debits_posted=d(debits),
        credits_posted=d(credits), overdraft_limit=d(limit), user_data=ud, version=version,
        created_seq=created_seq, created_ts=created_ts,
    )


def _resp_account(r: Reader, scale) -> Optional[Account]:
    found = r.bool("found")
    r.reserved(3)
    return _account_struct(r) if found else None


def _record(r: Reader, scale) -> Record:
    seq = r.u64("record seq")
    ts = r.u64("record timestamp")
    orig = r.u64("record original_seq")
    code = r.u16("record code")
    outcome = r.enum("record outcome", OUTCOME_KINDS)
    r.reserved(1, "record reserved")
    at = r.o
    n = r.u32("command_len")
    if n > r.remaining():
        r.fail(f"command_len {n} is over the {r.remaining()} bytes left", at)
    base = r.base + r.o
    raw = r.take(n, "command")
    cmd = decode_command(raw, scale, base=base)
    return Record(seq, ts, orig, code, OUTCOME_KINDS[outcome], cmd, raw)


def decode_record(data: bytes, scale_of: ScaleOf = None) -> Record:
    r = Reader(data, "record")
    rec = _record(r, _scale_fn(scale_of))
    r.end()
    return rec


def _resp_entry(r: Reader, scale) -> "EntryAnswer":
    status = r.enum("status", ENTRY_STATUSES)
    has_record = r.bool("has_record")
    code = r.u16("code")
    seq = r.u64("seq")
    record = _record(r, scale) if has_record else None
    return EntryAnswer(ENTRY_STATUSES[status], code, seq, record)


class EntryAnswer:
    """The ``Entry`` response as on the wire (see ``entry_info``)."""

    __slots__ = ("status", "code", "seq", "record")

    def __init__(self, status, code, seq, record):
        self.status, self.code, self.seq, self.record = status, code, seq, record

    def __repr__(self):
        return f"EntryAnswer(status={self.status!r}, code={self.code}, seq={self.seq}, record={self.record!r})"


def entry_info(entry_id: int, ans: EntryAnswer) -> EntryInfo:
    """The entry's status, sequence and lines, from the record that decided it
    (a Transfer, an Entry, or one inside a Chain)."""
    lines: Tuple[Line, ...] = ()
    reference = None
    user_data = 0
    if ans.record is not None:
        found = _find_entry(ans.record.command, entry_id)
        if found is not None:
            if isinstance(found, Transfer):
                lines = found.lines
            else:
                lines = tuple(found.lines)
                reference = found.reference
            user_data = to_id(found.user_data, allow_zero=True)
    return EntryInfo(
        id=entry_id, status=ans.status, code=ans.code, name=error_name(ans.code),
        sequence=ans.seq or None, record=ans.record, lines=lines, reference=reference, user_data=user_data,
    )


def _find_entry(cmd, entry_id: int):
    if isinstance(cmd, (Transfer, Entry)) and cmd.id == entry_id:
        return cmd
    if isinstance(cmd, Chain):
        for op in cmd.ops:
            if isinstance(op, (Transfer, Entry)) and op.id == entry_id:
                return op
    return None


def _lien_struct(r: Reader, scale_v: int) -> Lien:
    id_ = r.u128("id")
    account = r.u128("account")
    amount = r.u128("amount")
    captured = r.u128("captured")
    owner = r.u128("owner")
    ud = r.u128("user_data")
    created_seq = r.u64("created_seq")
    created_ts = r.u64("created_ts")
    deadline = r.u64("deadline")
    cur = r.code8()
    status = r.enum("status", LIEN_STATUSES)
    flags = r.flags("flags", 1)
    r.reserved(6)
    return Lien(
        id=id_, account=account, currency=cur, scale=scale_v, amount=from_minor(amount, scale_v),
        captured=from_minor(captured, scale_v), owner=owner, user_data=ud, created_seq=created_seq,
        created_ts=created_ts, deadline=deadline if flags & 1 else None, status=LIEN_STATUSES[status],
    )


def _resp_lien(r: Reader, scale) -> Optional[Lien]:
    found = r.bool("found")
    at = r.o
    s = r.u8("scale")
    if s > 18:
        r.fail(f"scale {s} is over 18", at)
    r.reserved(2)
    return _lien_struct(r, s) if found else None


def _currency_struct(r: Reader) -> Currency:
    code = r.code8("code")
    at = r.o
    s = r.u8("scale")
    if s > 18:
        r.fail(f"scale {s} is over 18", at)
    r.reserved(7)
    return Currency(code, s)


def _resp_currency(r: Reader, scale) -> Optional[Currency]:
    found = r.bool("found")
    r.reserved(3)
    return _currency_struct(r) if found else None


def _resp_statement(r: Reader, scale) -> Statement:
    flags = r.flags("flags", 0b11)
    r.reserved(3)
    account = r.u128("account")
    at = r.o
    nxt = r.u64("next_from_seq")
    if not flags & 2 and nxt:
        r.fail("next_from_seq is not zero but its flag is clear", at)
    if flags & 1:
        cur = _currency_struct(r)
    else:
        r.reserved(16, "currency (absent)")
        cur = None
    n = r.count("line_count", 48 + 32)
    r.reserved(4)
    s = cur.scale if cur else None
    lines = []
    for _ in range(n):
        debit = r.u128("debit")
        credit = r.u128("credit")
        balance = r.i128("balance")
        rec = _record(r, scale)
        lines.append(StatementLine(from_minor(debit, s), from_minor(credit, s), from_minor(balance, s), rec))
    return Statement(account, cur, nxt if flags & 2 else None, tuple(lines))


def _resp_records(r: Reader, scale) -> Tuple[Record, ...]:
    n = r.count("count", 32)
    return tuple(_record(r, scale) for _ in range(n))


def _resp_status(r: Reader, scale) -> Status:
    shards = r.u32("shards")
    next_seq = r.u64("next_seq")
    durable = r.u64("durable_seq")
    history_from = r.u64("history_from")
    read_only = r.bool("read_only")
    r.reserved(3)
    return Status(shards, next_seq, durable, history_from, read_only, r.str("version"))


def _finding(r: Reader) -> Finding:
    return Finding(r.str("kind"), r.str("subject"), r.str("message"))


def _resp_verification(r: Reader, scale) -> Verification:
    clean = r.bool("clean")
    full = r.bool("full")
    nums = [r.u64(f) for f in ("cut_sequence", "accounts", "accounts_checked_against_log",
                               "records_checked_against_index", "max_shard_pause_us", "duration_ms")]
    currencies = tuple((r.str("code"), r.str("sum")) for _ in range(r.count("currencies", 8)))
    errors = tuple(_finding(r) for _ in range(r.count("errors", 12)))
    warnings = tuple(_finding(r) for _ in range(r.count("warnings", 12)))
    return Verification(clean, full, *nums, currencies, errors, warnings)


def _resp_hotspots(r: Reader, scale) -> Hotspots:
    window = r.u64("window_s")
    writes = r.u64("total_writes")
    conflicts = r.u64("total_conflicts")
    w = tuple((r.u128("account"), r.u64("count")) for _ in range(r.count("writes", 24)))
    c = tuple((r.u128("account"), r.u64("count")) for _ in range(r.count("conflicts", 24)))
    return Hotspots(window, writes, conflicts, w, c)


def _resp_event(r: Reader, scale):
    """Event: kept raw (``found``, the bytes after the 8-byte head)."""
    found = r.bool("found")
    r.reserved(3)
    rest = r.take(r.remaining(), "event")
    if not found and rest:
        r.fail("bytes after a not-found Event")
    return rest if found else None


def _resp_events(r: Reader, scale) -> Tuple[EventSummary, ...]:
    n = r.count("count", 16 + 4 + 1 + 4 + 24 + 2)
    out = []
    for _ in range(n):
        id_ = r.u128("id")
        name = r.str("name")
        state = r.enum("state", EVENT_STATES)
        steps = r.u32("steps")
        created = r.u64("created_ts")
        started = r.u64("started_ts")
        ended = r.u64("ended_ts")
        deadline = r.opt("deadline", lambda: r.u64("deadline"))
        failure = r.opt("failure", lambda: r.u16("failure"))
        out.append(EventSummary(id_, name, EVENT_STATES[state], steps, created, started, ended, deadline, failure))
    return tuple(out)


_RESPONSES = {
    RESP_OUTCOMES: _resp_outcomes,
    RESP_ACCOUNT: _resp_account,
    RESP_ENTRY: _resp_entry,
    RESP_LIEN: _resp_lien,
    RESP_CURRENCY: _resp_currency,
    RESP_STATEMENT: _resp_statement,
    RESP_RECORDS: _resp_records,
    RESP_STATUS: _resp_status,
    RESP_VERIFICATION: _resp_verification,
    RESP_HOTSPOTS: _resp_hotspots,
    RESP_EVENT: _resp_event,
    RESP_EVENTS: _resp_events,
    RESP_ERROR: _resp_error,
}

_RESPONSE_NAMES = {
    RESP_OUTCOMES: "Outcomes", RESP_ACCOUNT: "Account", RESP_ENTRY: "Entry", RESP_LIEN: "Lien",
    RESP_CURRENCY: "Currency", RESP_STATEMENT: "Statement", RESP_RECORDS: "Records",
    RESP_STATUS: "Status", RESP_VERIFICATION: "Verification", RESP_HOTSPOTS: "Hotspots",
    RESP_EVENT: "Event", RESP_EVENTS: "Events", RESP_ERROR: "Error",
}


# ---------------------------------------------------------------- helpers for clients


def currencies_of(cmd) -> set:
    """The currency codes whose scales encoding ``cmd`` needs."""
    out = set()
    if isinstance(cmd, Transfer):
        out.add(cmd.currency)
    elif isinstance(cmd, Entry):
        for line in cmd.lines:
            if isinstance(line, Line):
                out.add(line.currency)
    elif isinstance(cmd, (CreateLien, CaptureLien)):
        out.add(cmd.currency)
    elif isinstance(cmd, CreateAccount):
        if cmd.policy == "overdraft_limit":
            out.add(cmd.currency)
    elif isinstance(cmd, Chain):
        for op in cmd.ops:
            out |= currencies_of(op)
    return out
