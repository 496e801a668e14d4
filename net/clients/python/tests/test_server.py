"""Integration tests against a real tallyd (see conftest.py)."""

import asyncio
import uuid
from decimal import Decimal

import pytest

from tally_client import (
    CaptureLien,
    Chain,
    Condition,
    CreateAccount,
    CreateCurrency,
    Credit,
    Entry,
    Line,
    TallyError,
    Transfer,
    connect,
)
from tally_client import client as client_module

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def ledger(c, new_id, new_currency, scale=2, fund="1000.00"):
    """A fresh currency, an unrestricted bank and two wallets (no overdraft);
    wallet a funded with ``fund``."""
    cur = new_currency()
    o = await c.create_currency(cur, scale=scale)
    assert o.status == "committed", o
    bank, a, b = new_id(), new_id(), new_id()
    outs = await c.submit([
        CreateAccount(bank, cur, "unrestricted"),
        CreateAccount(a, cur, "no_overdraft"),
        CreateAccount(b, cur, "no_overdraft"),
    ])
    assert [o.status for o in outs] == ["committed"] * 3, outs
    if fund:
        o = await c.transfer(new_id(), from_account=bank, to_account=a, amount=fund, currency=cur)
        assert o.status == "committed", o
    return cur, bank, a, b


async def test_status(client):
    s = await client.status()
    assert s.next_seq >= 1 and s.shards >= 1 and not s.read_only and s.version


async def test_currency_accounts_transfer_commit(client, new_id, new_currency):
    cur = new_currency()
    o = await client.create_currency(cur, scale=2)
    assert (o.status, o.code, o.name) == ("committed", 0, None)
    assert o.sequence and o.timestamp
    c = await client.currency(cur)
    assert (c.code, c.scale) == (cur, 2)
    assert await client.currency("NOSUCH") is None
    bank, w = new_id(), new_id()
    o1 = await client.create_account(bank, currency=cur, policy="unrestricted")
    o2 = await client.create_account(w, currency=cur)
    assert o1.status == o2.status == "committed"
    assert o2.sequence == o1.sequence + 1
    o = await client.transfer(new_id(), from_account=bank, to_account=w, amount="50.00", currency=cur)
    assert o.status == "committed" and o.code == 0 and o.sequence > o2.sequence


async def test_balances_are_decimal(client, new_id, new_currency):
    cur, bank, a, b = await ledger(client, new_id, new_currency, fund="50.00")
    o = await client.transfer(new_id(), from_account=a, to_account=b, amount=Decimal("12.34"), currency=cur)
    assert o.status == "committed"
    acc_a, acc_b, acc_bank = await asyncio.gather(client.account(a), client.account(b), client.account(bank))
    assert isinstance(acc_a.balance, Decimal)
    assert acc_a.balance == Decimal("37.66") and acc_a.available == Decimal("37.66") and acc_a.reserved == 0
    assert acc_b.balance == Decimal("12.34")
    assert acc_bank.balance == Decimal("-50.00")
    assert acc_a.currency == cur and acc_a.scale == 2 and acc_a.policy == "no_overdraft" and acc_a.state == "active"
    assert acc_a.debits_posted == Decimal("12.34") and acc_a.credits_posted == Decimal("50.00")
    assert await client.account(new_id()) is None


async def test_duplicate_applies_nothing(client, new_id, new_currency):
    cur, bank, a, b = await ledger(client, new_id, new_currency)
    tid = new_id()
    first = await client.transfer(tid, from_account=a, to_account=b, amount="10.00", currency=cur)
    assert first.status == "committed"
    before = await client.account(b)
    again = await client.transfer(tid, from_account=a, to_account=b, amount="10.00", currency=cur)
    assert again.status == "duplicate"
    assert again.code == 0 and again.sequence == first.sequence
    after = await client.account(b)
    assert after.balance == before.balance == Decimal("10.00")
    assert after.version == before.version
    # same id, other content
    other = await client.transfer(tid, from_account=a, to_account=b, amount="11.00", currency=cur)
    assert other.status == "rejected" and other.code == 111 and other.name == "id_reused_with_different_content"


async def test_insufficient_funds(client, new_id, new_currency):
    cur, bank, a, b = await ledger(client, new_id, new_currency, fund="5.00")
    o = await client.transfer(new_id(), from_account=a, to_account=b, amount="5.01", currency=cur)
    assert o.status == "rejected"
    assert o.code == 108 and o.name == "insufficient_funds"
    assert o.sequence  # decided at its own sequence
    assert o.timestamp is None
    assert (await client.account(a)).balance == Decimal("5.00")
    assert (await client.account(b)).balance == 0


async def test_batch_of_1000(client, new_id, new_currency):
    cur, bank, a, b = await ledger(client, new_id, new_currency, fund=None)
    ids = [new_id() for _ in range(1000)]
    cmds = [Transfer(i, bank, a, "0.01", cur) for i in ids]
    outs = await client.submit(cmds)
    assert len(outs) == 1000
    assert all(o.status == "committed" for o in outs)
    seqs = [o.sequence for o in outs]
    assert seqs == list(range(seqs[0], seqs[0] + 1000))
    ts = [o.timestamp for o in outs]
    assert ts == list(range(ts[0], ts[0] + 1000))
    assert (await client.account(a)).balance == Decimal("10.00")
    e = await client.entry(ids[500])
    assert e.status == "committed" and e.sequence == seqs[500]


async def check_sequences(client, cmds, outs):
    """Every sequence the walking rule gave matches what entry() says."""
    for cmd, o in zip(cmds, outs):
        e = await client.entry(cmd.id)
        if o.status == "committed":
            assert e.status == "committed" and e.sequence == o.sequence, (cmd.id, o, e)
        elif o.status == "rejected" and o.sequenced:
            assert e.status == "rejected" and e.sequence == o.sequence and e.code == o.code, (cmd.id, o, e)


async def test_batch_with_rejection_in_the_middle(client, new_id, new_currency):
    cur, bank, a, b = await ledger(client, new_id, new_currency, fund="3.00")
    cmds = [
        Transfer(new_id(), a, b, "1.00", cur),
        Transfer(new_id(), a, b, "1.00", cur),
        Transfer(new_id(), a, b, "5.00", cur),  # insufficient
        Transfer(new_id(), a, b, "1.00", cur),
        Transfer(new_id(), a, b, "1.00", cur),  # insufficient: a is empty
        Transfer(new_id(), bank, b, "1.00", cur),
    ]
    outs = await client.submit(cmds)
    assert [o.status for o in outs] == ["committed", "committed", "rejected", "committed", "rejected", "committed"]
    assert outs[2].code == outs[4].code == 108
    assert [o.index for o in outs] == list(range(6))
    sequenced = [o.sequence for o in outs if o.sequenced]
    assert sequenced == list(range(sequenced[0], sequenced[0] + len(sequenced)))
    await check_sequences(client, cmds, outs)
    assert (await client.account(b)).balance == Decimal("4.00")


async def test_batch_starting_and_ending_with_rejections(client, new_id, new_currency):
    cur, bank, a, b = await ledger(client, new_id, new_currency, fund="1.00")
    cmds = [
        Transfer(new_id(), b, a, "1.00", cur),  # b is empty
        Transfer(new_id(), a, b, "1.00", cur),
        Transfer(new_id(), a, b, "1.00", cur),  # a is empty now
    ]
    outs = await client.submit(cmds)
    assert [o.status for o in outs] == ["rejected", "committed", "rejected"]
    await check_sequences(client, cmds, outs)
    # all rejected
    cmds = [Transfer(new_id(), a, b, "1.00", cur), Transfer(new_id(), a, b, "2.00", cur)]
    outs = await client.submit(cmds)
    assert [o.status for o in outs] == ["rejected", "rejected"]
    await check_sequences(client, cmds, outs)


async def test_batch_with_duplicates(client, new_id, new_currency):
    cur, bank, a, b = await ledger(client, new_id, new_currency)
    t1 = Transfer(new_id(), a, b, "1.00", cur)
    [o1] = await client.submit([t1])
    t2 = Transfer(new_id(), a, b, "1.00", cur)
    outs = await client.submit([t1, t2, t1])
    assert [o.status for o in outs] == ["duplicate", "committed", "duplicate"]
    assert outs[0].sequence == outs[2].sequence == o1.sequence
    await check_sequences(client, [t2], [outs[1]])
    assert (await client.account(b)).balance == Decimal("2.00")


async def test_chain_fails_atomically(client, new_id, new_currency):
    cur, bank, a, b = await ledger(client, new_id, new_currency, fund="10.00")
    first, second = new_id(), new_id()
    chain_id = new_id()
    o = await client.chain(chain_id, [
        Transfer(first, a, b, "6.00", cur),
        Transfer(second, a, b, "6.00", cur),  # 4.00 left: fails
    ])
    assert o.status == "rejected" and o.code == 108
    assert o.op == 1
    assert (await client.account(a)).balance == Decimal("10.00")
    assert (await client.account(b)).balance == 0
    assert (await client.entry(first)).status != "committed"
    # a chain that passes
    ok = await client.chain(new_id(), [Transfer(new_id(), a, b, "6.00", cur), Transfer(new_id(), b, a, "1.00", cur)])
    assert ok.status == "committed"
    assert (await client.account(a)).balance == Decimal("5.00")


async def test_lien_create_capture_release(client, new_id, new_currency):
    cur, bank, a, b = await ledger(client, new_id, new_currency, fund="100.00")
    lien = new_id()
    o = await client.create_lien(lien, account=a, amount="30.00", currency=cur, owner=7)
    assert o.status == "committed", o
    acc = await client.account(a)
    assert acc.reserved == Decimal("30.00") and acc.available == Decimal("70.00") and acc.balance == Decimal("100.00")
    li = await client.lien(lien)
    assert li.status == "active" and li.amount == Decimal("30.00") and li.account == a and li.owner == 7
    entry_id = new_id()
    o = await client.capture_lien(lien, account=a, entry_id=entry_id, currency=cur,
                                  credits=[Credit(b, "25.00")], reference="order 1")
    assert o.status == "committed", o
    li = await client.lien(lien)
    assert li.status == "captured" and li.captured == Decimal("25.00")
    acc_a, acc_b = await client.account(a), await client.account(b)
    assert acc_a.balance == Decimal("75.00") and acc_a.reserved == 0 and acc_a.available == Decimal("75.00")
    assert acc_b.balance == Decimal("25.00")
    assert (await client.entry(entry_id)).status == "committed"
    # release
    lien2 = new_id()
    assert (await client.create_lien(lien2, a, "5.00", cur)).status == "committed"
    assert (await client.release_lien(lien2, a)).status == "committed"
    assert (await client.lien(lien2)).status == "released"
    assert (await client.account(a)).available == Decimal("75.00")
    assert await client.lien(new_id()) is None


async def test_entry_lookup(client, new_id, new_currency):
    cur, bank, a, b = await ledger(client, new_id, new_currency)
    eid = new_id()
    o = await client.post_entry(eid, [
        Line(a, "debit", "3.00", cur),
        Line(b, "credit", "2.00", cur),
        Line(bank, "credit", "1.00", cur),
    ], reference="three-way", user_data=42)
    assert o.status == "committed", o
    e = await client.entry(eid)
    assert e.status == "committed" and e.sequence == o.sequence and e.code == 0
    assert [(l.account, l.side, l.amount, l.currency) for l in e.lines] == [
        (a, "debit", Decimal("3.00"), cur), (b, "credit", Decimal("2.00"), cur), (bank, "credit", Decimal("1.00"), cur)]
    assert e.reference == "three-way" and e.user_data == 42
    assert e.record.seq == o.sequence and e.record.outcome == "committed"
    # a transfer comes back as two lines
    tid = new_id()
    t = await client.transfer(tid, a, b, "1.50", cur)
    e = await client.entry(tid)
    assert [(l.account, l.side, l.amount) for l in e.lines] == [(a, "debit", Decimal("1.50")), (b, "credit", Decimal("1.50"))]
    assert e.sequence == t.sequence
    # rejected and unknown
    rid = new_id()
    r = await client.transfer(rid, b, a, "999.00", cur)
    e = await client.entry(rid)
    assert e.status == "rejected" and e.code == 108 and e.sequence == r.sequence
    u = await client.entry(new_id())
    assert u.status == "unknown" and u.sequence is None and u.lines == ()


async def test_uuid_ids(client, new_id, new_currency):
    cur, bank, a, b = await ledger(client, new_id, new_currency)
    tid = uuid.uuid4()
    o = await client.transfer(tid, a, b, "1.00", cur)
    assert o.status == "committed"
    e = await client.entry(tid)
    assert e.status == "committed" and e.id == tid.int


async def test_expected_version_and_condition(client, new_id, new_currency):
    cur, bank, a, b = await ledger(client, new_id, new_currency, fund="10.00")
    acc = await client.account(a)
    o = await client.post_entry(new_id(), [
        Line(a, "debit", "1.00", cur, expected_version=acc.version + 5),
        Line(b, "credit", "1.00", cur),
    ])
    assert o.status == "rejected"
    assert o.current_version == acc.version
    assert o.line == 0
    o = await client.post_entry(new_id(), [
        Line(a, "debit", "1.00", cur, expected_version=acc.version),
        Line(b, "credit", "1.00", cur, condition=Condition.balance_at_most("0.50")),
    ])
    assert o.status == "rejected" and o.line == 1
    o = await client.post_entry(new_id(), [
        Line(a, "debit", "1.00", cur, expected_version=acc.version,
             condition=Condition.available_at_least("9.00")),
        Line(b, "credit", "1.00", cur),
    ])
    assert o.status == "committed", o


async def test_statement_and_find(client, new_id, new_currency):
    cur, bank, a, b = await ledger(client, new_id, new_currency, fund="10.00")
    ref = f"ref-{new_id()}"
    o = await client.post_entry(new_id(), [Line(a, "debit", "2.00", cur), Line(b, "credit", "2.00", cur)], reference=ref)
    assert o.status == "committed"
    st = await client.statement(a)
    assert st.account == a and st.currency.code == cur
    assert [l.balance for l in st.lines] == [Decimal("10.00"), Decimal("8.00")]
    assert st.lines[1].debit == Decimal("2.00") and st.lines[1].record.seq == o.sequence
    page = await client.statement(a, limit=1)
    assert len(page.lines) == 1 and page.next_from_seq is not None
    rest = await client.statement(a, from_seq=page.next_from_seq)
    assert [l.record.seq for l in rest.lines] == [o.sequence]
    found = await client.find_reference(ref)
    assert [r.seq for r in found] == [o.sequence]


async def test_subscribe_from_1_in_order(client, new_id, new_currency):
    cur, bank, a, b = await ledger(client, new_id, new_currency)
    last = await client.transfer(new_id(), a, b, "1.00", cur)
    seen = []
    sub = client.subscribe(from_seq=1)
    async for rec in sub:
        seen.append(rec)
        if rec.seq >= last.sequence:
            break
    await sub.aclose()
    assert [r.seq for r in seen] == list(range(1, last.sequence + 1))
    assert seen[-1].outcome == "committed" and isinstance(seen[-1].command, Transfer)
    assert seen[-1].command.amount == Decimal("1.00")
    assert any(isinstance(r.command, CreateCurrency) and r.command.code == cur for r in seen)
    rejected = [r for r in seen if r.outcome == "rejected"]
    assert all(r.code for r in rejected)


async def test_subscribe_follows_live(client, new_id, new_currency):
    cur, bank, a, b = await ledger(client, new_id, new_currency)
    start = (await client.status()).next_seq
    async with client.subscribe(from_seq=start) as sub:
        got = []

        async def consume():
            async for rec in sub:
                got.append(rec)
                if len(got) == 3:
                    return

        task = asyncio.ensure_future(consume())
        await asyncio.sleep(0.2)
        ids = [new_id() for _ in range(3)]
        for i in ids:
            assert (await client.transfer(i, a, b, "1.00", cur)).status == "committed"
        await asyncio.wait_for(task, 10)
    assert [r.command.id for r in got] == ids
    assert [r.seq for r in got] == list(range(got[0].seq, got[0].seq + 3))


async def test_reader_is_refused_writes(reader, client, new_id, new_currency):
    cur = new_currency()
    with pytest.raises(TallyError) as e:
        await reader.create_currency(cur, scale=2)
    assert e.value.code == 202 and e.value.name == "permission_denied"
    assert (await reader.status()).read_only
    assert await reader.currency(cur) is None


async def test_float_amount_raises_type_error(client, new_id, new_currency):
    cur, bank, a, b = await ledger(client, new_id, new_currency, fund=None)
    with pytest.raises(TypeError):
        await client.transfer(new_id(), a, b, 1.5, cur)
    with pytest.raises(TypeError):
        await client.transfer(new_id(), a, b, True, cur)


async def test_too_many_decimals_raise_before_sending(client, new_id, new_currency, monkeypatch):
    cur, bank, a, b = await ledger(client, new_id, new_currency, fund=None)
    sent = []
    real = client._call

    async def spy(body, **kw):
        sent.append(body[0])
        return await real(body, **kw)

    monkeypatch.setattr(client, "_call", spy)
    for bad in ["1.001", "0", "-1.00", str(2**127)]:
        with pytest.raises(TallyError) as e:
            await client.transfer(new_id(), bank, a, bad, cur)
        assert e.value.code == 2 and e.value.name == "invalid_amount"
    assert 1 not in sent  # no Submit went out


async def test_timeout_retry_resends_the_same_commands(server, new_id, new_currency, monkeypatch):
    async with connect(server.address, data_dir=server.data_dir, timeout=1.0, retries=2) as c:
        cur, bank, a, b = await ledger(c, new_id, new_currency)
        real = client_module._Stream.on_frame
        dropped = []

        def drop_first(self, fid, body):
            if not dropped and body[0] == 1:  # the first Outcomes
                dropped.append(fid)
                return
            return real(self, fid, body)

        monkeypatch.setattr(client_module._Stream, "on_frame", drop_first)
        tid = new_id()
        o = await c.transfer(tid, a, b, "1.00", cur)
        assert dropped
        assert o.status == "duplicate" and o.code == 0 and o.sequence
        assert (await c.entry(tid)).sequence == o.sequence
        assert (await c.account(b)).balance == Decimal("1.00")

        # every answer lost: timeout after 1 + retries attempts
        monkeypatch.setattr(client_module._Stream, "on_frame", lambda self, fid, body: None)
        with pytest.raises(TallyError) as e:
            await c.transfer(new_id(), a, b, "1.00", cur, timeout=0.3)
        assert e.value.code == 206 and e.value.name == "timeout"


async def test_unavailable(server, tmp_path):
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    try:
        with pytest.raises(TallyError) as e:
            async with connect(f"127.0.0.1:{port}", data_dir=server.data_dir, timeout=0.5):
                pass
        assert e.value.code == 207 and e.value.name == "unavailable"
    finally:
        s.close()


async def test_pipelining_many_calls(client, new_id, new_currency):
    cur, bank, a, b = await ledger(client, new_id, new_currency)
    ids = [new_id() for _ in range(200)]
    outs = await asyncio.gather(*(client.transfer(i, bank, b, "0.01", cur) for i in ids))
    assert all(o.status == "committed" for o in outs)
    assert len({o.sequence for o in outs}) == 200
    accs = await asyncio.gather(*(client.account(b) for _ in range(50)))
    assert {x.balance for x in accs} == {Decimal("2.00")}


async def test_batch_creates_currency_and_uses_it(client, new_id, new_currency):
    cur = new_currency()
    bank, w = new_id(), new_id()
    outs = await client.submit([
        CreateCurrency(cur, 3),
        CreateAccount(bank, cur, "unrestricted"),
        CreateAccount(w, cur, "overdraft_limit", overdraft_limit="5.000"),
        Transfer(new_id(), bank, w, "1.234", cur),
        Transfer(new_id(), w, bank, "6.000", cur),
    ])
    assert [o.status for o in outs] == ["committed"] * 5, outs
    acc = await client.account(w)
    assert acc.balance == Decimal("-4.766") and acc.overdraft_limit == Decimal("5.000") and acc.policy == "overdraft_limit"
    o = await client.transfer(new_id(), w, bank, "0.235", cur)
    assert o.status == "rejected"


async def test_server_verified_against_the_ca(server):
    certs = server.data_dir + "/certs"
    # the client's own certificate is not the CA that signed the server's
    with pytest.raises(TallyError) as e:
        async with connect(server.address, ca=certs + "/client.pem", cert=certs + "/client.pem",
                           key=certs + "/client.key", timeout=2):
            pass
    assert e.value.code == 207
    with pytest.raises(TallyError) as e:
        async with connect(server.address, data_dir=server.data_dir, server_name="example.com", timeout=2):
            pass
    assert e.value.code == 207


async def test_a_stream_the_server_stops_is_retired(client):
    """A header the server cannot trust: it answers Error under id 0 and stops
    reading that stream; the client stops using it and carries on."""
    proto = await client._connection()
    s = proto.open_stream()
    _, fut = s.send(b"\x09\0\0\0")  # Status
    bad = bytearray(client_module.codec.encode_frame(2, b"\x09\0\0\0"))
    bad[6] = 1  # non-zero reserved header byte
    proto.send(s.stream_id, bytes(bad))
    body = await asyncio.wait_for(fut, 5)
    assert body[0] == 8  # the request before the bad header was answered
    for _ in range(50):
        if s.error is not None:
            break
        await asyncio.sleep(0.05)
    assert s.stopped is not None and s.stopped.code == 203
    assert not s.usable
    assert (await client.status()).next_seq >= 1
