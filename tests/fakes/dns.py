"""A small authoritative DNS server for tests (the recipient domains' DNS, on loopback).

Runs dnspython's message codec in its own thread and event loop on 127.0.0.1, on one
ephemeral port for both UDP and TCP (TCP carries answers too big for UDP, as real servers
do). Records, error rcodes and silent names are scripted per test::

    with DnsServer() as dns:
        dns.add("example.test", "MX", "10 mx1.example.test.", ttl=300)
        dns.add("mx1.example.test", "A", "127.0.0.1")
        dns.set_rcode("broken.test", "SERVFAIL")  # or dns.rcode.SERVFAIL
        dns.set_timeout("slow.test")  # never answers
        resolver = MxResolver([dns.nameserver])
        ...
        assert dns.queries[("example.test", "MX")] == 1

Like real servers, the records of an RRset go out in random order (dnspython's default).
Names are stored and counted in their ASCII (IDNA) form, lower case, without the final dot:
``dns.add("bücher.test", ...)`` is counted under ``("xn--bcher-kva.test", "MX")``; use
:meth:`DnsServer.count` to look up with the name as written.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections import Counter

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset

__all__ = ["DnsServer"]

_IN = dns.rdataclass.IN
_MAX_CNAME_HOPS = 8
_TXT_CHUNK = 255  # a TXT character-string holds at most 255 bytes


def _name(name: str | dns.name.Name) -> dns.name.Name:
    """An absolute, lower-case name; unicode is IDNA-encoded by dnspython."""
    if isinstance(name, str):
        name = dns.name.from_text(name)
    return name.canonicalize()


def _key_text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True) if name != dns.name.root else "."


def _rdatatype(rtype: str | int) -> dns.rdatatype.RdataType:
    if isinstance(rtype, str):
        return dns.rdatatype.from_text(rtype.upper())
    return dns.rdatatype.RdataType.make(rtype)


def _rdata(rdtype: dns.rdatatype.RdataType, value: str) -> dns.rdata.Rdata:
    """Parse presentation format; a TXT value not already quoted is split into strings."""
    if rdtype == dns.rdatatype.TXT and not value.startswith('"'):
        raw = value.encode()
        chunks = [raw[i : i + _TXT_CHUNK] for i in range(0, len(raw), _TXT_CHUNK)] or [b""]
        return dns.rdtypes.ANY.TXT.TXT(_IN, rdtype, chunks)
    # origin=root: a name written without the final dot is still absolute.
    return dns.rdata.from_text(_IN, rdtype, value, origin=dns.name.root, relativize=False)


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = self.server.answer(data, tcp=False)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


class DnsServer:
    """Start with ``with DnsServer() as dns:``; ``dns.address`` is ``(host, port)``."""

    def __init__(self, host: str = "127.0.0.1", *, negative_ttl: int | None = 60) -> None:
        """``negative_ttl``: SOA minimum sent with NXDOMAIN/NODATA; None sends no SOA."""
        self.host = host
        self.port = 0
        self.negative_ttl = negative_ttl
        self.queries: Counter[tuple[str, str]] = Counter()
        self.tcp_queries = 0
        self.errors: list[Exception] = []  # exceptions raised while answering (bugs)
        self._records: dict[dns.name.Name, dict[int, tuple[int, list[dns.rdata.Rdata]]]] = {}
        self._rcodes: dict[tuple[dns.name.Name, int | None], dns.rcode.Rcode] = {}
        self._silent: set[tuple[dns.name.Name, int | None]] = set()
        self._lock = threading.Lock()
        self._udp_sock: socket.socket | None = None
        self._tcp_sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tcp_writers: set[asyncio.StreamWriter] = set()
        self._tcp_tasks: set[asyncio.Task[None]] = set()
        self._udp_transport: asyncio.BaseTransport | None = None
        self._tcp_server: asyncio.Server | None = None

    # -- scripting ---------------------------------------------------------------------

    def add(self, name: str, rtype: str, value: str, ttl: int = 300) -> None:
        """Add one record. Records of one name and type form an RRset with the lowest TTL."""
        owner, rdtype = _name(name), _rdatatype(rtype)
        rdata = _rdata(rdtype, value)
        with self._lock:
            types = self._records.setdefault(owner, {})
            old_ttl, rdatas = types.get(rdtype, (ttl, []))
            if rdata not in rdatas:
                rdatas.append(rdata)
            types[rdtype] = (min(old_ttl, ttl), rdatas)

    def remove(self, name: str, rtype: str | None = None) -> None:
        """Remove a name's records of one type, or all of them (then it is NXDOMAIN)."""
        owner = _name(name)
        with self._lock:
            types = self._records.get(owner, {})
            if rtype is None:
                types.clear()
            else:
                types.pop(_rdatatype(rtype), None)
            if not types:
                self._records.pop(owner, None)

    def set_rcode(
        self, name: str, rcode: dns.rcode.Rcode | int | str, rtype: str | None = None
    ) -> None:
        """Answer queries for this name (of one type, or all) with this rcode."""
        code = dns.rcode.from_text(rcode) if isinstance(rcode, str) else dns.rcode.Rcode(rcode)
        with self._lock:
            self._rcodes[(_name(name), None if rtype is None else _rdatatype(rtype))] = code

    def set_timeout(self, name: str, rtype: str | None = None) -> None:
        """Never answer queries for this name (of one type, or all): the client times out."""
        with self._lock:
            self._silent.add((_name(name), None if rtype is None else _rdatatype(rtype)))

    def clear_faults(self, name: str) -> None:
        """Forget set_rcode / set_timeout for this name (all types)."""
        owner = _name(name)
        with self._lock:
            self._rcodes = {k: v for k, v in self._rcodes.items() if k[0] != owner}
            self._silent = {k for k in self._silent if k[0] != owner}

    def count(self, name: str, rtype: str) -> int:
        """Queries received for (name, type), with the name as written (unicode is fine)."""
        return self.queries[(_key_text(_name(name)), rtype.upper())]

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def nameserver(self) -> str:
        """``host:port`` as MxResolver takes it (``[v6]:port`` for IPv6)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    # -- answering ---------------------------------------------------------------------

    def answer(self, wire: bytes, *, tcp: bool) -> bytes | None:
        """The reply to one query in wire format, or None to stay silent."""
        try:
            return self._answer(wire, tcp)
        except Exception as exc:  # a bug in the fake: say SERVFAIL, keep it for the test
            self.errors.append(exc)
            response = dns.message.make_response(dns.message.from_wire(wire))
            response.set_rcode(dns.rcode.SERVFAIL)
            return response.to_wire()

    def _answer(self, wire: bytes, tcp: bool) -> bytes | None:
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response.to_wire()
        question = query.question[0]
        qname, rdtype = question.name.canonicalize(), question.rdtype
        with self._lock:
            self.queries[(_key_text(qname), dns.rdatatype.to_text(rdtype))] += 1
            self.tcp_queries += tcp
            if (qname, rdtype) in self._silent or (qname, None) in self._silent:
                return None
            rcode = self._rcodes.get((qname, rdtype), self._rcodes.get((qname, None)))
            if rcode is not None:
                response.set_rcode(rcode)
            else:
                self._fill(response, qname, rdtype)
        limit = 65535 if tcp else (max(512, query.payload) if query.edns >= 0 else 512)
        return response.to_wire(max_size=limit, prefer_truncation=True)

    def _fill(self, response: dns.message.Message, qname: dns.name.Name, rdtype: int) -> None:
        """Answer section (following CNAMEs inside our data), or NXDOMAIN / NODATA + SOA."""
        name = qname
        for _ in range(_MAX_CNAME_HOPS):
            types = self._records.get(name, {})
            if rdtype in types:
                response.answer.append(self._rrset(name, rdtype, types[rdtype]))
                return
            cname = types.get(dns.rdatatype.CNAME)
            if cname is None or rdtype == dns.rdatatype.CNAME:
                break
            response.answer.append(self._rrset(name, dns.rdatatype.CNAME, cname))
            name = cname[1][0].target.canonicalize()  # type: ignore[attr-defined]
        if not self._exists(name):
            response.set_rcode(dns.rcode.NXDOMAIN)
        if self.negative_ttl is not None:
            response.authority.append(self._soa(name))

    def _exists(self, name: dns.name.Name) -> bool:
        """A name exists when it, or a name below it (empty non-terminal), has records."""
        return any(owner.is_subdomain(name) for owner in self._records)

    @staticmethod
    def _rrset(
        name: dns.name.Name, rdtype: int, entry: tuple[int, list[dns.rdata.Rdata]]
    ) -> dns.rrset.RRset:
        ttl, rdatas = entry
        return dns.rrset.from_rdata_list(name, ttl, rdatas)

    def _soa(self, name: dns.name.Name) -> dns.rrset.RRset:
        """An SOA for the name's top-level label: a superdomain of every name we serve."""
        zone = dns.name.Name(name.labels[-2:]) if len(name) > 1 else dns.name.root
        ttl = self.negative_ttl or 0
        text = f"ns.{zone} hostmaster.{zone} 1 3600 600 86400 {ttl}".replace("..", ".")
        return dns.rrset.from_text_list(zone, ttl, _IN, dns.rdatatype.SOA, [text])

    # -- running -----------------------------------------------------------------------

    def __enter__(self) -> DnsServer:
        self._bind()
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._start())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True, name="fake-dns")
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake DNS server did not start")
        if failure:
            raise failure[0]
        return self

    def _bind(self) -> None:
        """UDP on an ephemeral port first, then TCP on the same number (retry if taken)."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        for _ in range(20):
            udp = socket.socket(family, socket.SOCK_DGRAM)
            udp.bind((self.host, 0))
            port = udp.getsockname()[1]
            tcp = socket.socket(family, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind((self.host, port))
                tcp.listen(16)
            except OSError:
                udp.close()
                tcp.close()
                continue
            self._udp_sock, self._tcp_sock, self.port = udp, tcp, port
            return
        raise OSError("no port free for both UDP and TCP")

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        self._udp_transport, _ = await loop.create_datagram_endpoint(
            lambda: _Udp(self), sock=self._udp_sock
        )
        self._tcp_server = await asyncio.start_server(self._serve_tcp, sock=self._tcp_sock)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Length-prefixed queries (RFC 1035 4.2.2) until the client closes."""
        task = asyncio.current_task()
        assert task is not None
        self._tcp_tasks.add(task)
        self._tcp_writers.add(writer)
        try:
            while True:
                size = int.from_bytes(await reader.readexactly(2), "big")
                reply = self.answer(await reader.readexactly(size), tcp=True)
                if reply is not None:
                    writer.write(len(reply).to_bytes(2, "big") + reply)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._tcp_writers.discard(writer)
            self._tcp_tasks.discard(task)
            writer.close()

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            future = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
            with contextlib.suppress(Exception):
                future.result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        for sock in (self._udp_sock, self._tcp_sock):
            if sock is not None:
                sock.close()

    async def _shutdown(self) -> None:
        """Close the listeners and every open TCP connection, so no task is left pending."""
        if self._udp_transport is not None:
            self._udp_transport.close()
        if self._tcp_server is not None:
            self._tcp_server.close()
        for writer in list(self._tcp_writers):
            writer.close()
        if self._tcp_tasks:
            await asyncio.wait(list(self._tcp_tasks), timeout=5)
        if self._tcp_server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._tcp_server.wait_closed(), 5)
