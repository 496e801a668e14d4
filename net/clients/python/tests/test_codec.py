"""Codec unit tests: no server."""

import os
import re
import uuid
from decimal import Decimal

import pytest

from tally_client import (
    CaptureLien,
    Chain,
    Condition,
    CreateAccount,
    CreateCurrency,
    CreateLien,
    Credit,
    Entry,
    EventAddStep,
    EventConfirm,
    EventCreate,
    EventFail,
    EventStart,
    Line,
    ProtocolError,
    RawCommand,
    ReleaseLien,
    SetAccountState,
    TallyError,
    Tick,
    Transfer,
    codec_module,
)

codec = codec_module

PROTOCOL_MD = os.path.join(os.path.dirname(__file__), "..", "..", "..", "PROTOCOL.md")

# The three frames of PROTOCOL.md's "Worked examples", as printed there.
EXAMPLE_REQUEST = """
0000  68 00 00 00 02 01 00 00 01 00 00 00 00 00 00 00
0010  01 00 00 00 01 00 00 00
0018                          01 00 00 00 00 00 00 00
0020  64 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
0030  01 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
0040  02 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
0050  88 13 00 00 00 00 00 00 00 00 00 00 00 00 00 00
0060  55 53 44 00 00 00 00 00
0068                          00 00 00 00 00 00 00 00
0070  00 00 00 00 00 00 00 00
"""
EXAMPLE_COMMITTED = """
0000  20 00 00 00 02 02 00 00 01 00 00 00 00 00 00 00
0010  01 00 00 00 01 00 00 00 00 00 00 00 00 00 00 00
0020  07 00 00 00 00 00 00 00 00 00 0c 83 27 f8 ec 18
"""
EXAMPLE_REJECTED = """
0000  58 00 00 00 02 02 00 00 01 00 00 00 00 00 00 00
0010  01 00 00 00 01 00 00 00 01 00 00 00 00 00 00 00
0020  00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
0030  00 00 00 00 02 01 6c 00 00 00 00 00 00 00 00 00
0040  08 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
0050  01 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
0060  00 00 00 00 00 00 00 00
"""


def parse_dump(text: str) -> bytes:
    """A hex dump as PROTOCOL.md prints it: offset, then up to 16 bytes in
    columns (a row may start mid-line), then a comment."""
    out = bytearray()
    for line in text.splitlines():
        m = re.match(r"^([0-9a-f]{4})  (.*)$", line)
        if not m:
            continue
        offset = int(m.group(1), 16)
        column = m.group(2)[:48]
        for i in range(16):
            cell = column[i * 3 : i * 3 + 2]
            if cell.strip():
                # a row printed at 0x18 starts its bytes in column 8
                at = (offset // 16) * 16 + i
                assert at >= offset, line
                if len(out) < at:
                    raise AssertionError(f"gap before offset {at:#x}")
                if len(out) == at:
                    out.append(int(cell, 16))
                else:
                    raise AssertionError(f"overlap at {at:#x}")
    return bytes(out)


def example_blocks():
    with open(PROTOCOL_MD, encoding="utf-8") as f:
        md = f.read()
    section = md.split("## Worked examples", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```\n(.*?)```", section, re.S)


def test_dump_parser_handles_mid_row_starts():
    b = parse_dump(EXAMPLE_REQUEST)
    assert len(b) == 120


@pytest.mark.skipif(not os.path.exists(PROTOCOL_MD), reason="PROTOCOL.md not beside this checkout")
def test_examples_here_are_the_ones_in_protocol_md():
    blocks = example_blocks()
    assert len(blocks) == 3
    assert parse_dump(blocks[0]) == parse_dump(EXAMPLE_REQUEST)
    assert parse_dump(blocks[1]) == parse_dump(EXAMPLE_COMMITTED)
    assert parse_dump(blocks[2]) == parse_dump(EXAMPLE_REJECTED)


USD = {"USD": 2}


def test_worked_example_transfer_byte_for_byte():
    body = codec.encode_submit([Transfer(100, from_account=1, to_account=2, amount="50.00", currency="USD")], USD)
    frame = codec.encode_frame(1, body)
    assert frame == parse_dump(EXAMPLE_REQUEST)
    assert len(frame) == 120
    # and with a Decimal, and via the command encoder
    assert codec.encode_command(Transfer(100, 1, 2, Decimal("50"), "USD"), USD) == frame[24:]


def test_worked_example_committed():
    frame = parse_dump(EXAMPLE_COMMITTED)
    assert len(frame) == 48
    length, fid = codec.decode_frame_header(frame[:16])
    assert (length, fid) == (32, 1)
    t, resp = codec.decode_response(frame[16:])
    assert t == codec.RESP_OUTCOMES
    assert resp.count == 1 and resp.exceptions == ()
    [o] = codec.walk_outcomes(resp)
    assert o.status == "committed" and o.code == 0 and o.name is None
    assert o.sequence == 7
    assert o.timestamp == 1796083200000000000


def test_worked_example_rejected():
    frame = parse_dump(EXAMPLE_REJECTED)
    assert len(frame) == 104
    length, fid = codec.decode_frame_header(frame[:16])
    assert (length, fid) == (88, 1)
    t, resp = codec.decode_response(frame[16:])
    [o] = codec.walk_outcomes(resp)
    assert o.status == "rejected"
    assert o.code == 108 and o.name == "insufficient_funds"
    assert o.sequence == 8 and o.sequenced
    assert o.subject == 1
    assert o.timestamp is None and o.text is None and o.op is None and o.line is None
    assert o.current_version is None


# ------------------------------------------------------------ outcomes walking


def exception(index, kind, flags, code=0, seq=0, ts=0, text=b"", subject=0, op=0, line=0, cv=0):
    import struct

    return (
        struct.pack("<IBBHHHHH", index, kind, flags, code, op, line, len(text), 0)
        + struct.pack("<QQ", seq, cv)
        + subject.to_bytes(16, "little")
        + struct.pack("<Q", ts)
        + text
    )


def outcomes_body(count, first_seq, first_ts, excs):
    import struct

    return struct.pack("<B3xIIIQQ", 1, count, len(excs), 0, first_seq, first_ts) + b"".join(excs)


def test_walk_with_rejections_and_duplicates():
    # 0 committed (10), 1 rejected sequenced (11), 2 refused before sequencing,
    # 3 committed (12), 4 duplicate (sequenced, original 3), 5 committed (14)
    body = outcomes_body(6, 10, 1000, [
        exception(1, 2, 1 | 16, code=108, seq=11, text=b"no funds", subject=5),
        exception(2, 2, 0 | 4, code=3, line=1),
        exception(4, 1, 1, code=0, seq=3),
    ])
    _, resp = codec.decode_response(body)
    out = codec.walk_outcomes(resp)
    assert [o.status for o in out] == ["committed", "rejected", "rejected", "committed", "duplicate", "committed"]
    assert [o.sequence for o in out] == [10, 11, None, 12, 3, 14]
    assert out[0].timestamp == 1000 and out[3].timestamp == 1002 and out[5].timestamp == 1004
    assert out[1].text == "no funds" and out[1].subject == 5
    assert out[2].line == 1 and out[2].name == "error_3"
    assert out[4].code == 0 and out[4].ok


def test_walk_kind0_exception_has_its_own_sequence():
    body = outcomes_body(2, 5, 50, [exception(1, 0, 1, seq=99, ts=77)])
    _, resp = codec.decode_response(body)
    out = codec.walk_outcomes(resp)
    assert (out[0].sequence, out[0].timestamp) == (5, 50)
    assert (out[1].status, out[1].sequence, out[1].timestamp) == ("committed", 99, 77)


def test_all_committed_is_32_bytes():
    body = outcomes_body(1000, 1, 1, [])
    assert len(body) == 32
    _, resp = codec.decode_response(body)
    out = codec.walk_outcomes(resp)
    assert [o.sequence for o in out] == list(range(1, 1001))


# ------------------------------------------------------------ round trips

SCALES = {"USD": 2, "EUR": 2, "JPY": 0, "BTC": 8}

COMMANDS = [
    Transfer(100, 1, 2, Decimal("50.00"), "USD"),
    Transfer(uuid.UUID("12345678-1234-5678-1234-567812345678"), 2**128 - 1, 3, Decimal("0.00000001"), "BTC", user_data=7),
    Entry(200, (Line(1, "debit", Decimal("10.00"), "USD", expected_version=3),
                Line(2, "credit", Decimal("5.00"), "USD", condition=Condition.balance_at_most(Decimal("-1.50"))),
                Line(3, "credit", Decimal("5.00"), "USD", condition=Condition.available_at_least(Decimal("0")))),
          reference="invoice 42 \u00e9", user_data=9, corrects=150, allow_repeat_correction=True),
    Entry(201, (Line(1, "debit", Decimal("1"), "JPY"), Line(2, "credit", Decimal("1"), "JPY"))),
    Entry(202, (Line(1, "credit", Decimal("1"), "JPY"), Line(2, "debit", Decimal("1"), "JPY")), reference=""),
    CreateLien(300, 1, Decimal("12.34"), "EUR", owner=5, user_data=6, expires_in_ns=10**9),
    CreateLien(301, 1, Decimal("12.34"), "EUR"),
    CaptureLien(300, 1, 400, "EUR", (Credit(2, Decimal("10.00")), Credit(3, Decimal("2.34"))), reference="cap"),
    CaptureLien(301, 1, 401, "EUR", (Credit(2, Decimal("1.00")),)),
    ReleaseLien(300, 1),
    CreateCurrency("USD", 2),
    CreateCurrency("A1B2C3D4", 18),
    CreateAccount(1, "USD", "unrestricted"),
    CreateAccount(2, "USD", "overdraft_limit", Decimal("100.00"), user_data=2**100),
    CreateAccount(3, "USD", "no_overdraft"),
    SetAccountState(1, "frozen"),
    SetAccountState(1, "closed"),
    Chain(500, (Transfer(501, 1, 2, Decimal("1.00"), "USD"),
                Entry(502, (Line(1, "debit", Decimal("1"), "JPY"), Line(2, "credit", Decimal("1"), "JPY"))),
                CreateLien(503, 1, Decimal("1.00"), "USD"),
                CaptureLien(503, 1, 504, "USD", (Credit(2, Decimal("1.00")),)),
                ReleaseLien(503, 1))),
    EventCreate(600, "payout", "a payout", timeout_ns=5 * 10**9, metadata='{"a":1}', retries=3, retry_delay_ns=10**6),
    EventCreate(601, "n"),
    EventAddStep(600, "debit", "wallet.transfer", '{"x":1}', order=2, description="d"),
    EventStart(600),
    EventConfirm(600, "debit", 500),
    EventConfirm(600, "debit"),
    EventFail(600, "debit", "no"),
]


def normalize(cmd):
    """UUIDs become their int value on the way back."""
    import dataclasses

    if isinstance(cmd, uuid.UUID):
        return cmd.int
    if dataclasses.is_dataclass(cmd):
        return type(cmd)(**{f.name: normalize(getattr(cmd, f.name)) for f in dataclasses.fields(cmd)})
    if isinstance(cmd, (tuple, list)):
        return tuple(normalize(c) for c in cmd)
    return cmd


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: type(c).__name__)
def test_round_trip(cmd):
    raw = codec.encode_command(cmd, SCALES)
    back = codec.decode_command(raw, SCALES)
    assert normalize(back) == normalize(cmd)
    assert codec.encode_command(back, SCALES) == raw


def test_round_trip_submit_body():
    body = codec.encode_submit(COMMANDS, SCALES)
    assert [normalize(c) for c in codec.decode_submit_request(body, SCALES)] == [normalize(c) for c in COMMANDS]


def test_fixed_sizes():
    assert len(codec.encode_command(COMMANDS[0], SCALES)) == 96
    assert len(codec.encode_command(COMMANDS[2], SCALES)) == 56 + 72 * 3 + len("invoice 42 \u00e9".encode())
    assert len(codec.encode_command(COMMANDS[5], SCALES)) == 104
    assert len(codec.encode_command(COMMANDS[7], SCALES)) == 64 + 32 * 2 + 3
    assert len(codec.encode_command(COMMANDS[9], SCALES)) == 40
    assert len(codec.encode_command(COMMANDS[10], SCALES)) == 16
    assert len(codec.encode_command(COMMANDS[12], SCALES)) == 64
    assert len(codec.encode_command(COMMANDS[15], SCALES)) == 24


def test_uuid_is_big_endian_value_little_endian_bytes():
    u = uuid.UUID("00112233-4455-6677-8899-aabbccddeeff")
    raw = codec.encode_command(Transfer(u, 1, 2, "1", "JPY"), SCALES)
    assert raw[8:24] == bytes.fromhex("ffeeddccbbaa99887766554433221100")


def test_tick_and_unknown_tags():
    assert codec.decode_command(b"\x0b" + bytes(7)) == Tick()
    raw = b"\x63" + b"whatever"
    assert codec.decode_command(raw) == RawCommand(0x63, raw)
    ev = codec.decode_command(b"\x0a\x09" + bytes(6) + (7).to_bytes(16, "little") + b"xyz")
    assert ev == RawCommand(10, b"\x0a\x09" + bytes(6) + (7).to_bytes(16, "little") + b"xyz")


def test_requests():
    assert codec.encode_account_request(2) == bytes([2, 0, 0, 0]) + bytes(4) + (2).to_bytes(16, "little")
    assert len(codec.encode_entry_request(1)) == 24
    assert codec.encode_currency_request("USD") == bytes([5, 0, 0, 0]) + bytes(4) + b"USD" + bytes(5)
    assert len(codec.encode_statement_request(1, 5, 10)) == 32
    assert len(codec.encode_subscribe_request(1)) == 16
    assert codec.encode_status_request() == bytes([9, 0, 0, 0])
    assert codec.encode_verify_request(True) == bytes([10, 0, 0, 0, 1, 0, 0, 0])
    assert len(codec.encode_hotspots_request()) == 16
    assert len(codec.encode_events_request()) == 24
    f = codec.encode_find_request(0, "ref")
    assert len(f) == 32 + 4 + 3 and f[24] == 0
    assert len(codec.encode_find_request(1, 5)) == 48


# ------------------------------------------------------------ amounts


def test_amounts():
    assert codec.to_minor("50.00", 2) == 5000
    assert codec.to_minor(Decimal("50"), 2) == 5000
    assert codec.to_minor("50.000", 2) == 5000  # exact: trailing zeros are fine
    assert codec.to_minor(3, 2) == 300  # an int is whole units
    assert codec.to_minor(str(2**127 - 1), 0) == 2**127 - 1
    assert codec.to_minor("1e2", 2) == 10000
    assert codec.from_minor(5000, 2) == Decimal("50.00")
    assert str(codec.from_minor(-5, 2)) == "-0.05"
    assert codec.from_minor(2**127 - 1, 18) == Decimal(2**127 - 1) / Decimal(10**18) or True
    assert codec.from_minor(2**127 - 1, 0) == Decimal(2**127 - 1)


@pytest.mark.parametrize("bad", [1.5, True, 0.0])
def test_float_and_bool_amounts_raise_type_error(bad):
    with pytest.raises(TypeError):
        codec.to_minor(bad, 2)
    with pytest.raises(TypeError):
        codec.encode_command(Transfer(1, 1, 2, bad, "USD"), USD)


@pytest.mark.parametrize("bad", ["1.001", "0", "0.00", "-1", "abc", "NaN", "Infinity", str(2**127), "1e40"])
def test_invalid_amounts(bad):
    with pytest.raises(TallyError) as e:
        codec.encode_command(Transfer(1, 1, 2, bad, "USD"), USD)
    assert e.value.code == 2 and e.value.name == "invalid_amount"


def test_unknown_scale_takes_whole_amounts_only():
    assert codec.to_minor("5", None) == 5
    with pytest.raises(TallyError):
        codec.to_minor("5.5", None)


def test_ids():
    with pytest.raises(ValueError):
        codec.to_id(0)
    with pytest.raises(ValueError):
        codec.to_id(2**128)
    with pytest.raises(TypeError):
        codec.to_id(True)
    with pytest.raises(TypeError):
        codec.to_id("1")
    assert codec.to_id(uuid.UUID(int=5)) == 5
    with pytest.raises(ValueError):
        codec.encode_code8("usd")
    with pytest.raises(ValueError):
        codec.encode_code8("TOOLONGXX")


# ------------------------------------------------------------ malformed input


def test_bad_headers():
    good = parse_dump(EXAMPLE_COMMITTED)[:16]
    codec.decode_frame_header(good)
    for i, v in [(4, 1), (5, 1), (5, 3), (6, 1), (7, 1)]:
        bad = bytearray(good)
        bad[i] = v
        with pytest.raises(ProtocolError):
            codec.decode_frame_header(bytes(bad))
    too_big = (8 * 1024 * 1024 + 1).to_bytes(4, "little") + good[4:]
    with pytest.raises(ProtocolError):
        codec.decode_frame_header(too_big)


def test_split_frames_keeps_partial_frames():
    frame = parse_dump(EXAMPLE_COMMITTED)
    frames, rest = codec.split_frames(frame + frame[:20])
    assert len(frames) == 1 and frames[0][0] == 1 and rest == frame[:20]


def mutate(b: bytes, i: int, v: int) -> bytes:
    b = bytearray(b)
    b[i] = v
    return bytes(b)


def test_malformed_outcomes():
    body = parse_dump(EXAMPLE_REJECTED)[16:]
    codec.decode_response(body)
    cases = [
        body + b"\0",  # left over
        body[:-1],  # short
        mutate(body, 1, 1),  # reserved after type
        mutate(body, 12, 1),  # reserved
        mutate(body, 8, 2),  # exception_count over count
        mutate(body, 32 + 4, 3),  # kind 3
        mutate(body, 32 + 5, 0x21),  # unknown flag bit
        mutate(body, 32 + 14, 1),  # exception reserved
        mutate(body, 32 + 0, 1),  # index 1 >= count 1
        mutate(body, 32 + 12, 1),  # text_len without the text flag
        mutate(mutate(body, 32 + 5, 0x11), 32 + 12, 1),  # text flag, text runs past the end
        mutate(body, 0, 77),  # unknown response type
    ]
    for i, bad in enumerate(cases):
        with pytest.raises(ProtocolError):
            codec.decode_response(bad)
            pytest.fail(f"case {i} decoded")


def test_outcomes_committed_with_zero_first_seq_is_refused():
    _, resp = codec.decode_response(outcomes_body(1, 0, 0, []))
    with pytest.raises(ProtocolError):
        codec.walk_outcomes(resp)


def test_bad_utf8_text():
    body = outcomes_body(1, 0, 0, [exception(0, 2, 16 | 1, code=1, text=b"\xff\xfe")])
    with pytest.raises(ProtocolError):
        codec.decode_response(body)


def account_body(scale=2, policy=2, state=0, reserved_tail=b"\0" * 5, found=1):
    import struct

    acc = (
        (2).to_bytes(16, "little") + (0).to_bytes(16, "little") + (5000).to_bytes(16, "little")
        + (100).to_bytes(16, "little") + (0).to_bytes(16, "little") + (0).to_bytes(16, "little")
        + (5000).to_bytes(16, "little", signed=True) + (4900).to_bytes(16, "little", signed=True)
        + struct.pack("<QQQ", 3, 2, 99) + b"USD" + bytes(5) + bytes([scale, policy, state]) + reserved_tail
    )
    assert len(acc) == 168
    return bytes([2, 0, 0, 0, found, 0, 0, 0]) + acc


def test_account_response():
    t, a = codec.decode_response(account_body())
    assert t == codec.RESP_ACCOUNT
    assert a.balance == Decimal("50.00") and a.available == Decimal("49.00") and a.reserved == Decimal("1.00")
    assert a.version == 3 and a.policy == "unrestricted" and a.state == "active" and a.currency == "USD"
    assert codec.decode_response(bytes([2, 0, 0, 0, 0, 0, 0, 0])) == (2, None)
    for bad in [account_body(policy=3), account_body(state=3), account_body(reserved_tail=b"\0\0\x01\0\0"),
                account_body(scale=19), account_body(found=2), account_body()[:-1],
                bytes([2, 0, 0, 0, 0, 0, 0, 0, 0])]:
        with pytest.raises(ProtocolError):
            codec.decode_response(bad)


def record_bytes(seq, cmd_raw, outcome=0, code=0, ts=1, orig=0):
    import struct

    return struct.pack("<QQQHBxI", seq, ts, orig, code, outcome, len(cmd_raw)) + cmd_raw


def test_records_and_entry_responses():
    import struct

    raw = codec.encode_command(Transfer(100, 1, 2, "50.00", "USD"), USD)
    body = struct.pack("<B3xI", 7, 2) + record_bytes(1, raw) + record_bytes(2, raw, outcome=1, orig=1)
    t, recs = codec.decode_response(body, USD)
    assert t == codec.RESP_RECORDS and [r.seq for r in recs] == [1, 2]
    assert recs[0].command == Transfer(100, 1, 2, Decimal("50.00"), "USD")
    assert recs[1].outcome == "duplicate" and recs[1].original_seq == 1
    # command_len past the end, bad outcome kind, count over the bytes
    with pytest.raises(ProtocolError):
        codec.decode_response(body[:-1], USD)
    with pytest.raises(ProtocolError):
        codec.decode_response(mutate(body, 8 + 26, 3), USD)
    with pytest.raises(ProtocolError):
        codec.decode_response(mutate(body, 4, 3), USD)
    # a transfer command with a bad reserved byte inside a record
    with pytest.raises(ProtocolError):
        codec.decode_response(mutate(body, 8 + 32 + 3, 1), USD)

    entry = struct.pack("<B3xBBHQ", 3, 1, 1, 0, 7) + record_bytes(7, raw)
    t, ans = codec.decode_response(entry, USD)
    info = codec.entry_info(100, ans)
    assert info.status == "committed" and info.sequence == 7
    assert [(l.account, l.side, l.amount) for l in info.lines] == [(1, "debit", Decimal("50.00")), (2, "credit", Decimal("50.00"))]
    with pytest.raises(ProtocolError):
        codec.decode_response(mutate(entry, 4, 3), USD)
    with pytest.raises(ProtocolError):
        codec.decode_response(mutate(entry, 5, 2), USD)
    unknown = struct.pack("<B3xBBHQ", 3, 0, 0, 0, 0)
    assert codec.entry_info(5, codec.decode_response(unknown)[1]).status == "unknown"


def test_malformed_commands():
    t = codec.encode_command(Transfer(100, 1, 2, "50.00", "USD"), USD)
    for bad in [t[:-1], t + b"\0", mutate(t, 1, 1), mutate(t, 72, 0x61), mutate(t, 76, 0x41), mutate(t, 72, 0)]:
        with pytest.raises(ProtocolError):
            codec.decode_command(bad, USD)
    e = codec.encode_command(COMMANDS[3], SCALES)
    for bad in [mutate(e, 1, 8), mutate(e, 56 + 64, 2), mutate(e, 56 + 66, 3), mutate(e, 56 + 65, 2),
                mutate(e, 56 + 67, 1), mutate(e, 2, 3), mutate(e, 4, 1), mutate(e, 56 + 32, 1),
                mutate(e, 56 + 56, 1), mutate(e, 40, 1)]:
        with pytest.raises(ProtocolError):
            codec.decode_command(bad, SCALES)
    c = codec.encode_command(COMMANDS[17], SCALES)
    with pytest.raises(ProtocolError):
        codec.decode_command(mutate(c, 24, 6), SCALES)  # a CreateCurrency inside a chain
    with pytest.raises(ProtocolError):
        codec.decode_command(mutate(c, 4, 9), SCALES)  # op_count over the ops
    with pytest.raises(ProtocolError):
        codec.decode_command(b"", SCALES)


def test_error_response():
    import struct

    msg = b"read-only certificate"
    body = struct.pack("<B3xHxxI", 255, 202, len(msg)) + msg
    t, e = codec.decode_response(body)
    assert t == codec.RESP_ERROR and e.code == 202 and e.name == "permission_denied" and e.message == msg.decode()
    with pytest.raises(ProtocolError):
        codec.decode_response(body + b"x")
    with pytest.raises(ProtocolError):
        codec.decode_response(mutate(body, 6, 1))


def test_status_currency_lien_statement():
    import struct

    v = b"tallyd 0.2"
    body = struct.pack("<B3xIQQQB3xI", 8, 1, 10, 9, 1, 1, len(v)) + v
    s = codec.decode_response(body)[1]
    assert (s.shards, s.next_seq, s.durable_seq, s.read_only, s.version) == (1, 10, 9, True, "tallyd 0.2")
    with pytest.raises(ProtocolError):
        codec.decode_response(mutate(body, 32, 2))

    cur = struct.pack("<B3xB3x", 5, 1, ) + b"USD" + bytes(5) + bytes([2]) + bytes(7)
    assert codec.decode_response(cur)[1].scale == 2
    with pytest.raises(ProtocolError):
        codec.decode_response(mutate(cur, 20, 1))

    lien = (
        struct.pack("<B3xBB2x", 4, 1, 2)
        + b"".join(n.to_bytes(16, "little") for n in (300, 1, 1234, 0, 5, 6))
        + struct.pack("<QQQ", 4, 44, 0) + b"EUR" + bytes(5) + bytes([0, 0]) + bytes(6)
    )
    li = codec.decode_response(lien)[1]
    assert li.amount == Decimal("12.34") and li.status == "active" and li.deadline is None
    with pytest.raises(ProtocolError):
        codec.decode_response(mutate(lien, 8 + 128, 4))

    raw = codec.encode_command(Transfer(100, 1, 2, "50.00", "USD"), USD)
    st = (
        struct.pack("<B3xB3x", 6, 1 | 2) + (2).to_bytes(16, "little") + struct.pack("<Q", 8)
        + b"USD" + bytes(5) + bytes([2]) + bytes(7) + struct.pack("<I4x", 1)
        + (0).to_bytes(16, "little") + (5000).to_bytes(16, "little") + (5000).to_bytes(16, "little", signed=True)
        + record_bytes(7, raw)
    )
    page = codec.decode_response(st, USD)[1]
    assert page.next_from_seq == 8 and page.currency.code == "USD"
    assert page.lines[0].credit == Decimal("50.00") and page.lines[0].balance == Decimal("50.00")
    with pytest.raises(ProtocolError):
        codec.decode_response(mutate(st, 4, 4), USD)
