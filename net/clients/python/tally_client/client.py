"""The asyncio client: one QUIC connection (aioquic, mutual TLS, ALPN
``tally/2``), a small pool of request streams that pipeline requests matched
by frame id, and one stream per subscription."""

from __future__ import annotations

import asyncio
import collections
import os
import socket
import ssl
from decimal import Decimal
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple, Union

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from . import codec
from .errors import TIMEOUT, UNAVAILABLE, ProtocolError, TallyError, error_name
from .types import (
    Account,
    CaptureLien,
    Chain,
    CreateAccount,
    CreateCurrency,
    CreateLien,
    Currency,
    Entry,
    EntryInfo,
    EventSummary,
    Hotspots,
    Lien,
    Line,
    Outcome,
    Record,
    ReleaseLien,
    SetAccountState,
    Statement,
    Status,
    Transfer,
    Verification,
)

DEFAULT_TIMEOUT = 10.0
DEFAULT_RETRIES = 2
KEEP_ALIVE_S = 15.0
IDLE_TIMEOUT_S = 60.0


class _Missing(Exception):
    """Raised by a scale lookup for a currency the client has not fetched yet."""

    def __init__(self, code: str):
        self.code = code


# ---------------------------------------------------------------- streams


class _Stream:
    """One bidirectional stream: frames out, frames in, matched by id."""

    def __init__(self, proto: "_Protocol", stream_id: int, feed: bool = False):
        self.proto = proto
        self.stream_id = stream_id
        self.pending: Dict[int, asyncio.Future] = {}
        self.next_id = 1
        self.buf = bytearray()
        self.error: Optional[TallyError] = None
        self.closed = False
        self.feed: Optional[asyncio.Queue] = asyncio.Queue() if feed else None
        self.feed_id: Optional[int] = None
        # set when the server stopped reading this stream (STOP_SENDING, or an
        # Error under frame id 0): no new requests go on it; what is pending
        # may still be answered until the server ends its side
        self.stopped: Optional[TallyError] = None

    @property
    def usable(self) -> bool:
        return self.error is None and self.stopped is None and not self.closed

    def send(self, body: bytes) -> Tuple[int, asyncio.Future]:
        if self.error is not None:
            raise self.error
        if self.stopped is not None:
            raise self.stopped
        fid = self.next_id
        self.next_id += 1
        frame = codec.encode_frame(fid, body)
        fut = asyncio.get_running_loop().create_future()
        if self.feed is not None:
            self.feed_id = fid
        else:
            self.pending[fid] = fut
        self.proto.send(self.stream_id, frame)
        return fid, fut

    def forget(self, fid: int) -> None:
        self.pending.pop(fid, None)

    def on_data(self, data: bytes, end: bool) -> None:
        if self.error is not None:
            return
        self.buf += data
        try:
            frames, rest = codec.split_frames(self.buf)
        except ProtocolError as e:
            self.fail(ProtocolError(f"stream {self.stream_id}: {e.message}"))
            return
        self.buf = bytearray(rest)
        for fid, body in frames:
            self.on_frame(fid, body)
        if end:
            if self.buf:
                self.fail(ProtocolError(f"stream {self.stream_id} ended inside a frame"))
            else:
                self.fail(self.stopped or TallyError(UNAVAILABLE, "unavailable", f"the server closed stream {self.stream_id}"))

    def on_frame(self, fid: int, body: bytes) -> None:
        if self.feed is not None and fid == self.feed_id:
            self.feed.put_nowait(body)
            return
        fut = self.pending.pop(fid, None)
        if fut is not None:
            if not fut.done():
                fut.set_result(body)
            return
        if fid == 0:
            # an untrusted header: the server stopped reading this stream;
            # requests sent after it will not be answered
            try:
                t, v = codec.decode_response(body)
                if t == codec.RESP_ERROR:
                    err = TallyError(v.code, error_name(v.code), f"stream {self.stream_id} stopped: {v.message}")
                else:
                    err = ProtocolError(f"frame id 0 carries response type {t}")
            except ProtocolError as e:
                err = e
            self.stop(err)
            if self.feed is not None:
                self.fail(err)
        # otherwise: a late answer to a call that timed out; ignore it

    def stop(self, err: TallyError) -> None:
        if self.stopped is None or self.stopped.code == UNAVAILABLE:
            self.stopped = err

    def fail(self, err: TallyError) -> None:
        if self.error is None:
            self.error = err
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(err)
        self.pending.clear()
        if self.feed is not None:
            self.feed.put_nowait(err)
        if not self.closed:
            # end our side too, so the stream does not hold one of the
            # connection's stream credits
            self.closed = True
            self.proto.close_stream(self.stream_id)
        self.proto.forget_stream(self)

    def close(self) -> None:
        """Stop: FIN our side and ask the server to stop sending."""
        if self.closed:
            return
        self.closed = True
        self.proto.close_stream(self.stream_id)
        if self.error is None:
            self.error = TallyError(UNAVAILABLE, "unavailable", "stream closed")
        self.proto.forget_stream(self)


class _Protocol(QuicConnectionProtocol):
    def __init__(self, quic: QuicConnection, **kw):
        super().__init__(quic, **kw)
        self.streams: Dict[int, _Stream] = {}
        self.terminated: Optional[TallyError] = None
        self.alpn: Optional[str] = None

    # sending
    def send(self, stream_id: int, data: bytes, end: bool = False) -> None:
        if self.terminated is not None:
            raise self.terminated
        self._quic.send_stream_data(stream_id, data, end_stream=end)
        self.transmit()

    def open_stream(self, feed: bool = False) -> _Stream:
        if self.terminated is not None:
            raise self.terminated
        sid = self._quic.get_next_available_stream_id()
        s = _Stream(self, sid, feed=feed)
        self.streams[sid] = s
        return s

    def forget_stream(self, s: _Stream) -> None:
        if self.streams.get(s.stream_id) is s:
            del self.streams[s.stream_id]

    def close_stream(self, stream_id: int) -> None:
        if self.terminated is not None:
            return
        try:
            self._quic.send_stream_data(stream_id, b"", end_stream=True)
        except Exception:
            pass
        try:
            self._quic.stop_stream(stream_id, 0)
        except Exception:
            pass
        self.transmit()

    def keep_alive(self) -> None:
        if self.terminated is None:
            self._quic.send_ping(0)
            self.transmit()

    # receiving
    def quic_event_received(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.StreamDataReceived):
            s = self.streams.get(event.stream_id)
            if s is not None:
                s.on_data(event.data, event.end_stream)
        elif isinstance(event, events.StreamReset):
            s = self.streams.get(event.stream_id)
            if s is not None:
                s.fail(TallyError(UNAVAILABLE, "unavailable", f"the server reset stream {event.stream_id} (code {event.error_code})"))
        elif isinstance(event, events.StopSendingReceived):
            s = self.streams.get(event.stream_id)
            if s is not None:
                s.stop(TallyError(UNAVAILABLE, "unavailable", f"the server stopped reading stream {event.stream_id} (code {event.error_code})"))
        elif isinstance(event, events.HandshakeCompleted):
            self.alpn = event.alpn_protocol
            if event.alpn_protocol != codec.ALPN:
                self.close(reason_phrase="no tally/2")
        elif isinstance(event, events.ConnectionTerminated):
            reason = event.reason_phrase or ""
            self.terminated = TallyError(
                UNAVAILABLE, "unavailable",
                f"connection closed (code {event.error_code}{', ' + reason if reason else ''})",
            )
            for s in list(self.streams.values()):
                s.fail(self.terminated)
            self.streams.clear()


# ---------------------------------------------------------------- the client


def _parse_address(address) -> Tuple[str, int]:
    if isinstance(address, tuple):
        return address[0], int(address[1])
    a = str(address)
    if a.startswith("["):
        host, _, port = a[1:].partition("]:")
    else:
        host, _, port = a.rpartition(":")
    if not host or not port:
        raise ValueError(f"address {address!r}: HOST:PORT")
    return host, int(port)


class Subscription:
    """The records of a feed, in sequence order, following the log live.
    ``async for record in sub``; ``await sub.aclose()`` (or leaving an
    ``async with`` block) closes the stream."""

    def __init__(self, client: "Client", from_seq: int):
        self._client = client
        self._from_seq = from_seq
        self._stream: Optional[_Stream] = None
        self._ready: Deque[Record] = collections.deque()
        self._last: Optional[int] = None
        self._done = False

    def __aiter__(self):
        return self

    async def __aenter__(self):
        if self._stream is None and not self._done:
            await self._start()  # the feed starts now, not at the first read
        return self

    async def __aexit__(self, *exc):
        await self.aclose()

    async def _start(self) -> None:
        proto = await self._client._connection()
        self._stream = proto.open_stream(feed=True)
        self._stream.send(codec.encode_subscribe_request(self._from_seq))

    async def __anext__(self) -> Record:
        if self._done:
            raise StopAsyncIteration
        while not self._ready:
            if self._stream is None:
                await self._start()
            item = await self._stream.feed.get()
            if isinstance(item, Exception):
                self._done = True
                raise item
            t, value = await self._client._decode(item)
            if t == codec.RESP_ERROR:
                self.close()
                raise TallyError(value.code, error_name(value.code), value.message)
            if t != codec.RESP_RECORDS:
                self.close()
                raise ProtocolError(f"a feed sent response type {t}, not Records")
            if not value:
                self.close()
                raise ProtocolError("a feed sent a Records frame with no record")
            for rec in value:
                expect = self._from_seq if self._last is None else self._last + 1
                if (self._last is None and rec.seq < expect) or (self._last is not None and rec.seq != expect):
                    self.close()
                    raise ProtocolError(f"feed: record {rec.seq} where {expect} was due (order, no gaps)")
                self._last = rec.seq
                self._ready.append(rec)
        return self._ready.popleft()

    @property
    def last_seq(self) -> Optional[int]:
        """The last sequence seen: resume from ``last_seq + 1``."""
        return self._last

    def close(self) -> None:
        self._done = True
        if self._stream is not None:
            self._stream.close()

    async def aclose(self) -> None:
        self.close()

    def __del__(self):
        try:
            if self._stream is not None and not self._stream.closed:
                self._stream.close()
        except Exception:
            pass


class Client:
    """A connection to ``tallyd``. Use ``async with connect(...) as c`` or
    ``c = await connect(...)`` then ``await c.close()``."""

    def __init__(
        self,
        address="127.0.0.1:7400",
        *,
        data_dir: Optional[str] = None,
        reader: bool = False,
        ca: Optional[str] = None,
        cert: Optional[str] = None,
        key: Optional[str] = None,
        server_name: str = "localhost",
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        streams: int = 4,
    ):
        self.host, self.port = _parse_address(address)
        if data_dir is not None:
            certs = os.path.join(data_dir, "certs")
            ca = ca or os.path.join(certs, "ca.pem")
            who = "reader" if reader else "client"
            cert = cert or os.path.join(certs, f"{who}.pem")
            key = key or os.path.join(certs, f"{who}.key")
        if not (ca and cert and key):
            raise ValueError("pass data_dir= (the server's development certificates) or ca=, cert= and key=")
        self.ca, self.cert, self.key = ca, cert, key
        self.server_name = server_name
        self.timeout = timeout
        self.retries = retries
        self.pool_size = max(1, streams)
        self._proto: Optional[_Protocol] = None
        self._transport = None
        self._pool: List[_Stream] = []
        self._lock: Optional[asyncio.Lock] = None
        self._keepalive: Optional[asyncio.Task] = None
        self._scales: Dict[str, int] = {}
        self._closed = False

    # lifecycle ---------------------------------------------------------

    def __await__(self):
        return self.open().__await__()

    async def __aenter__(self) -> "Client":
        return await self.open()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def open(self) -> "Client":
        self._closed = False
        await self._connection()
        return self

    async def close(self) -> None:
        self._closed = True
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None
        await self._drop_connection()

    async def _drop_connection(self) -> None:
        proto, transport = self._proto, self._transport
        self._proto, self._transport, self._pool = None, None, []
        if proto is not None:
            try:
                proto.close()
                await asyncio.wait_for(proto.wait_closed(), 1.0)
            except Exception:
                pass
        if transport is not None:
            transport.close()

    def _configuration(self) -> QuicConfiguration:
        cfg = QuicConfiguration(
            is_client=True,
            alpn_protocols=[codec.ALPN],
            server_name=self.server_name,
            idle_timeout=IDLE_TIMEOUT_S,
            max_data=64 * 1024 * 1024,
            max_stream_data=16 * 1024 * 1024,
        )
        cfg.verify_mode = ssl.CERT_REQUIRED
        cfg.load_verify_locations(cafile=self.ca)
        cfg.load_cert_chain(self.cert, self.key)
        return cfg

    async def _connection(self) -> _Protocol:
        if self._proto is not None and self._proto.terminated is None:
            return self._proto
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._proto is not None and self._proto.terminated is None:
                return self._proto
            if self._closed:
                raise TallyError(UNAVAILABLE, "unavailable", "the client is closed")
            await self._drop_connection()
            self._proto, self._transport = await self._connect()
            if self._keepalive is None or self._keepalive.done():
                self._keepalive = asyncio.get_running_loop().create_task(self._keep_alive())
            return self._proto

    async def _connect(self):
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)
        except OSError as e:
            raise TallyError(UNAVAILABLE, "unavailable", f"cannot resolve {self.host}: {e}") from None
        addr = infos[0][4]
        if len(addr) == 2:
            addr = ("::ffff:" + addr[0], addr[1], 0, 0)
        quic = QuicConnection(configuration=self._configuration())
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(("::", 0, 0, 0))
        except Exception:
            sock.close()
            raise
        transport, proto = await loop.create_datagram_endpoint(lambda: _Protocol(quic), sock=sock)
        try:
            proto.connect(addr)
            await asyncio.wait_for(proto.wait_connected(), self.timeout)
        except (asyncio.TimeoutError, ConnectionError, OSError) as e:
            why = proto.terminated.message if proto.terminated is not None else (str(e) or type(e).__name__)
            proto.close()
            transport.close()
            raise TallyError(UNAVAILABLE, "unavailable", f"cannot connect to {self.host}:{self.port}: {why}") from None
        if proto.alpn != codec.ALPN:
            proto.close()
            transport.close()
            raise TallyError(UNAVAILABLE, "unavailable", f"the server did not agree to ALPN {codec.ALPN}")
        return proto, transport

    async def _keep_alive(self) -> None:
        try:
            while not self._closed:
                await asyncio.sleep(KEEP_ALIVE_S)
                if self._proto is not None:
                    self._proto.keep_alive()
        except asyncio.CancelledError:
            pass

    def _stream(self, proto: _Protocol) -> _Stream:
        self._pool = [s for s in self._pool if s.usable and s.proto is proto]
        if len(self._pool) < self.pool_size:
            s = proto.open_stream()
            self._pool.append(s)
            return s
        return min(self._pool, key=lambda s: len(s.pending))

    # requests ----------------------------------------------------------

    async def _call(self, body: bytes, *, timeout: Optional[float] = None, retries: Optional[int] = None) -> bytes:
        """Send one request and return its response body. On a timeout or a
        lost connection the same request is sent again, ``retries`` times."""
        timeout = self.timeout if timeout is None else timeout
        retries = self.retries if retries is None else retries
        last: Optional[TallyError] = None
        for attempt in range(retries + 1):
            try:
                proto = await self._connection()
                stream = self._stream(proto)
                fid, fut = stream.send(body)
            except TallyError as e:
                if e.code != UNAVAILABLE:
                    raise
                last = e
                await asyncio.sleep(min(0.05 * 2**attempt, 1.0))
                continue
            try:
                return await asyncio.wait_for(fut, timeout)
            except asyncio.TimeoutError:
                stream.forget(fid)
                last = TallyError(TIMEOUT, "timeout", f"no answer within {timeout} s ({attempt + 1} attempt(s))")
            except TallyError as e:
                if e.code != UNAVAILABLE:
                    raise
                last = e
        assert last is not None
        raise last

    async def _decode(self, body: bytes):
        """Decode a response, fetching the scales of the currencies its
        records name (cached) so that their amounts come back as Decimal."""
        unknown: set = set()

        def scale(code: str) -> Optional[int]:
            if code in self._scales:
                return self._scales[code]
            if code in unknown:
                return None
            raise _Missing(code)

        while True:
            try:
                return codec.decode_response(body, scale)
            except _Missing as m:
                cur = await self.currency(m.code)
                if cur is None:
                    unknown.add(m.code)

    async def _request(self, body: bytes, req_type: int, **kw):
        t, value = await self._decode(await self._call(body, **kw))
        if t == codec.RESP_ERROR:
            raise TallyError(value.code, error_name(value.code), value.message)
        if t != codec.EXPECTED_RESPONSE[req_type]:
            raise ProtocolError(f"response type {t} to request type {req_type}")
        return value

    # queries -----------------------------------------------------------

    async def status(self, **kw) -> Status:
        return await self._request(codec.encode_status_request(), codec.REQ_STATUS, **kw)

    async def currency(self, code: str, **kw) -> Optional[Currency]:
        body = await self._call(codec.encode_currency_request(code), **kw)
        t, value = codec.decode_response(body)
        if t == codec.RESP_ERROR:
            raise TallyError(value.code, error_name(value.code), value.message)
        if t != codec.RESP_CURRENCY:
            raise ProtocolError(f"response type {t} to Currency")
        if value is not None:
            if value.code != code:
                raise ProtocolError(f"asked for currency {code}, got {value.code}")
            self._scales[code] = value.scale
        return value

    async def account(self, account, **kw) -> Optional[Account]:
        return await self._request(codec.encode_account_request(account), codec.REQ_ACCOUNT, **kw)

    async def entry(self, entry, **kw) -> EntryInfo:
        ans = await self._request(codec.encode_entry_request(entry), codec.REQ_ENTRY, **kw)
        return codec.entry_info(codec.to_id(entry), ans)

    async def lien(self, lien, **kw) -> Optional[Lien]:
        return await self._request(codec.encode_lien_request(lien), codec.REQ_LIEN, **kw)

    async def statement(self, account, from_seq: int = 1, limit: int = codec.MAX_PAGE, **kw) -> Statement:
        body = codec.encode_statement_request(account, from_seq, limit)
        return await self._request(body, codec.REQ_STATEMENT, **kw)

    async def _find(self, kind, key, from_ts, to_ts, limit, **kw) -> Tuple[Record, ...]:
        body = codec.encode_find_request(kind, key, from_ts, to_ts, limit)
        return await self._request(body, codec.REQ_FIND, **kw)

    async def find_reference(self, text: str, from_ts: int = 0, to_ts: int = codec.MAX_U64,
                             limit: int = codec.MAX_PAGE, **kw) -> Tuple[Record, ...]:
        """Entries and captures with this reference (continue from the last
        record's timestamp + 1)."""
        return await self._find(codec.FIND_REFERENCE, text, from_ts, to_ts, limit, **kw)

    async def find_entry_user_data(self, user_data, from_ts: int = 0, to_ts: int = codec.MAX_U64,
                                   limit: int = codec.MAX_PAGE, **kw) -> Tuple[Record, ...]:
        return await self._find(codec.FIND_ENTRY_USER_DATA, user_data, from_ts, to_ts, limit, **kw)

    async def find_account_user_data(self, user_data, from_ts: int = 0, to_ts: int = codec.MAX_U64,
                                     limit: int = codec.MAX_PAGE, **kw) -> Tuple[Record, ...]:
        return await self._find(codec.FIND_ACCOUNT_USER_DATA, user_data, from_ts, to_ts, limit, **kw)

    async def verify(self, full: bool = False, **kw) -> Verification:
        kw.setdefault("timeout", max(self.timeout, 60.0))
        return await self._request(codec.encode_verify_request(full), codec.REQ_VERIFY, **kw)

    async def hotspots(self, top: int = 10, window_s: int = 60, **kw) -> Hotspots:
        return await self._request(codec.encode_hotspots_request(top, window_s), codec.REQ_HOTSPOTS, **kw)

    async def events(self, limit: int = 100, older_than_s: int = 0, state: Optional[str] = None, **kw) -> Tuple[EventSummary, ...]:
        body = codec.encode_events_request(limit, older_than_s, state)
        return await self._request(body, codec.REQ_EVENTS, **kw)

    def subscribe(self, from_seq: int = 1) -> Subscription:
        """Every sequenced record from ``from_seq`` on, then live."""
        return Subscription(self, from_seq)

    # writes ------------------------------------------------------------

    async def _scales_for(self, commands: Sequence) -> Dict[str, Optional[int]]:
        needed = set()
        for c in commands:
            needed |= codec.currencies_of(c)
        in_batch = {c.code: c.scale for c in commands if isinstance(c, CreateCurrency)}
        missing = [code for code in needed if code not in self._scales]
        if missing:
            # the server's scale wins; one the server lacks may come from a
            # CreateCurrency in the batch; else None (whole amounts only)
            await asyncio.gather(*(self.currency(code) for code in missing))
        return {code: self._scales.get(code, in_batch.get(code)) for code in needed}

    async def submit(self, commands: Sequence, *, timeout: Optional[float] = None,
                     retries: Optional[int] = None) -> List[Outcome]:
        """Submit a batch; one Outcome per command, in order. Each command is
        decided on its own (use a Chain for all-or-nothing). A request that
        times out is sent again as it was (same ids: the server answers what
        already happened as duplicates)."""
        commands = list(commands)
        if not commands:
            return []
        scales = await self._scales_for(commands)
        body = codec.encode_submit(commands, scales)
        resp = await self._request(body, codec.REQ_SUBMIT, timeout=timeout, retries=retries)
        if resp.count != len(commands):
            raise ProtocolError(f"Outcomes: count {resp.count} for {len(commands)} commands")
        outcomes = codec.walk_outcomes(resp)
        for c, o in zip(commands, outcomes):
            if isinstance(c, CreateCurrency) and o.ok:
                self._scales[c.code] = c.scale
        return outcomes

    async def submit_one(self, command, **kw) -> Outcome:
        return (await self.submit([command], **kw))[0]

    async def create_currency(self, code: str, scale: int, **kw) -> Outcome:
        return await self.submit_one(CreateCurrency(code, scale), **kw)

    async def create_account(self, id, currency: str, policy: str = "no_overdraft", overdraft_limit=None,
                             user_data=0, **kw) -> Outcome:
        return await self.submit_one(CreateAccount(id, currency, policy, overdraft_limit, user_data), **kw)

    async def set_account_state(self, account, state: str, **kw) -> Outcome:
        return await self.submit_one(SetAccountState(account, state), **kw)

    async def transfer(self, id, from_account, to_account, amount, currency: str, user_data=0, **kw) -> Outcome:
        return await self.submit_one(Transfer(id, from_account, to_account, amount, currency, user_data), **kw)

    async def post_entry(self, id, lines: Sequence[Line], reference: Optional[str] = None, user_data=0,
                         corrects=None, allow_repeat_correction: bool = False, **kw) -> Outcome:
        return await self.submit_one(Entry(id, tuple(lines), reference, user_data, corrects, allow_repeat_correction), **kw)

    async def create_lien(self, id, account, amount, currency: str, owner=0, user_data=0,
                          expires_in_ns: Optional[int] = None, **kw) -> Outcome:
        return await self.submit_one(CreateLien(id, account, amount, currency, owner, user_data, expires_in_ns), **kw)

    async def capture_lien(self, lien, account, entry_id, currency: str, credits, reference: Optional[str] = None,
                           **kw) -> Outcome:
        return await self.submit_one(CaptureLien(lien, account, entry_id, currency, tuple(credits), reference), **kw)

    async def release_lien(self, lien, account, **kw) -> Outcome:
        return await self.submit_one(ReleaseLien(lien, account), **kw)

    async def chain(self, id, ops: Sequence, **kw) -> Outcome:
        return await self.submit_one(Chain(id, tuple(ops)), **kw)


def connect(address="127.0.0.1:7400", **kw) -> Client:
    """A client for ``tallyd`` at ``address`` ("HOST:PORT"). Certificates:
    ``data_dir=`` (the server's development set; ``reader=True`` for the
    read-only one) or ``ca=``, ``cert=``, ``key=``. ``server_name`` (TLS,
    default "localhost"), ``timeout`` (s, default 10), ``retries`` (default 2),
    ``streams`` (request streams, default 4). ``async with connect(...) as c``
    or ``c = await connect(...)``."""
    return Client(address, **kw)
