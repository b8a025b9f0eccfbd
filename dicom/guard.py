"""What one DICOM peer may cost the SCP: connections, time and memory.

pynetdicom (3.0.4) trusts its peers in three ways that let anyone on the network block ingest
or exhaust memory:

- every TCP connection takes an association slot before it has sent a byte, and the slots are
  counted only in total, so ten idle connections from one address lock every scanner out;
- a PDU is read whole, at the length its header announces (up to 4 GiB), before anything
  checks it against the maximum PDU length we advertised (``DULServiceProvider._read_pdu_data``
  calls ``recv(pdu_length)``);
- a read has no deadline, only a per-``recv`` socket timeout, so a peer that drips one byte a
  second holds its slot for as long as it likes;
- with TLS, the handshake runs in the accepting thread (``AssociationServer.get_request``
  wraps the socket with the handshake on connect), so one peer that connects and says nothing
  stops every other from connecting.

Upstream has no setting for any of this, and its tracker has no issue on receive-side PDU
limits (searched for 3.0.4; report it there when this module is next touched). fo-dicom had
the same bug and fixed it the same way (fo-dicom/fo-dicom#327, #509, #1678). So it is fixed
here through the extension points the library documents: ``AE.make_server(server_class=...)``
gives a server that counts connections per peer address (``verify_request``), shakes TLS
hands in each connection's own thread against the association request's deadline, and a request
handler whose associations use ``GuardedDUL``, a ``DULServiceProvider`` whose PDU reader checks
the length first and reads against a deadline. Re-check ``_read_pdu_data`` when pynetdicom is
upgraded: ``GuardedDUL`` keeps its events (Evt17 transport closed, Evt19 invalid PDU) and its
decoding.
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass

from pynetdicom import evt
from pynetdicom.dul import DULServiceProvider
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

log = logging.getLogger(__name__)

PDU_HEADER_BYTES = 6
P_DATA_TF = 0x04
PDU_TYPES = range(0x01, 0x08)
# An A-ASSOCIATE-RQ lists presentation contexts and user information (identity tokens are at
# most 64 KiB): 256 KiB is generous. Release and abort PDUs carry 4 bytes.
LONGEST_ASSOCIATION_PDU = 256 * 1024
LONGEST_OTHER_PDU = 1024
RECEIVE_CHUNK = 64 * 1024
REFUSAL_LOG_INTERVAL_S = 10.0


@dataclass(frozen=True)
class PeerLimits:
    """The bounds a peer lives within (``dicom.*`` settings)."""

    max_associations: int             # beyond it an association is rejected (transient)
    max_connections_per_peer: int     # open connections from one IP address, at most
    association_request_seconds: float  # connect → complete A-ASSOCIATE-RQ
    pdu_seconds: float                # first byte → last byte of any later PDU
    max_pdu_bytes: int                # what we advertise; a longer P-DATA is refused unread

    @property
    def max_connections(self) -> int:
        """Open TCP connections in total. Above the association limit by one peer's share, so
        that a sender over the limit still gets pynetdicom's A-ASSOCIATE-RJ (transient, local
        limit exceeded) and retries, rather than a closed connection."""
        return self.max_associations + self.max_connections_per_peer

    def longest_pdu(self, pdu_type: int) -> int:
        """The longest PDU body of this type we read; the standard bounds P-DATA-TF by the
        receiver's advertised maximum (0 would mean unlimited: we never advertise it)."""
        if pdu_type == P_DATA_TF:
            return self.max_pdu_bytes
        return LONGEST_ASSOCIATION_PDU if pdu_type in (0x01, 0x02, 0x03) else LONGEST_OTHER_PDU


class _RateLimitedLog:
    """One warning per interval and kind, with the number suppressed: a flood of refusals
    must not become a flood of log lines."""

    def __init__(self, interval_s: float = REFUSAL_LOG_INTERVAL_S):
        self.interval_s = interval_s
        self.lock = threading.Lock()
        self.last: dict[str, float] = {}
        self.suppressed: Counter[str] = Counter()

    def warning(self, kind: str, message: str, *args) -> None:
        now = time.monotonic()
        with self.lock:
            if now - self.last.get(kind, -self.interval_s) < self.interval_s:
                self.suppressed[kind] += 1
                return
            self.last[kind] = now
            suppressed, self.suppressed[kind] = self.suppressed[kind], 0
        if suppressed:
            message += f" ({suppressed} more like it in the last {self.interval_s:g} s)"
        log.warning(message, *args)


refusals = _RateLimitedLog()


class PduStalled(Exception):
    """The peer did not deliver the PDU within its deadline."""


def receive_exactly(raw_socket, count: int, deadline: float) -> bytearray:
    """Up to ``count`` bytes (fewer only if the peer closed), read before ``deadline``
    (time.monotonic()); raises PduStalled when it passes."""
    received = bytearray()
    while len(received) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            raise PduStalled(f"{len(received)} of {count} bytes before the deadline")
        raw_socket.settimeout(left)
        try:
            chunk = raw_socket.recv(min(count - len(received), RECEIVE_CHUNK))
        except TimeoutError:
            raise PduStalled(f"{len(received)} of {count} bytes before the deadline") from None
        if not chunk:
            break
        received += chunk
    return received


class PduRefused(Exception):
    """The PDU is not read: an unknown type, or longer than we accept."""

    def __init__(self, kind: str, message: str, *args):
        super().__init__(message % args)
        self.kind, self.message, self.args_ = kind, message, args


def read_pdu(raw_socket, limits: PeerLimits, *, established: bool) -> bytes:
    """One whole PDU (header and body) from ``raw_socket``, read against the deadline for its
    phase; b"" if the peer closed first. Raises PduRefused before reading the body of a PDU
    longer than ``limits`` allow, and PduStalled when the deadline passes."""
    deadline = time.monotonic() + (limits.pdu_seconds if established
                                   else limits.association_request_seconds)
    header = receive_exactly(raw_socket, PDU_HEADER_BYTES, deadline)
    if len(header) < PDU_HEADER_BYTES:
        return b""
    pdu_type, _, length = struct.unpack(">BBL", header)
    if pdu_type not in PDU_TYPES:
        raise PduRefused("unknown-pdu", "refused an unknown PDU type 0x%02X", pdu_type)
    if length > limits.longest_pdu(pdu_type):
        raise PduRefused(f"oversized-pdu-{pdu_type}", "refused a PDU of type 0x%02X announcing "
                         "%d bytes (at most %d)", pdu_type, length, limits.longest_pdu(pdu_type))
    body = receive_exactly(raw_socket, length, deadline)
    return bytes(header + body) if len(body) == length else b""


class GuardedDUL(DULServiceProvider):
    """pynetdicom's DICOM upper layer, with a PDU reader that refuses (A-ABORT) a PDU longer
    than ``limits`` allow before reading its body, and one that is not complete in time."""

    def __init__(self, assoc, limits: PeerLimits):
        super().__init__(assoc)
        self.limits = limits
        self.refused = False

    def _read_pdu_data(self) -> None:
        if self.refused:
            # After an A-ABORT, whatever the peer still sends is not read: the link closes.
            self.socket.close()
            return
        raw = self.socket.socket if self.socket is not None else None
        if raw is None:
            self.event_queue.put("Evt17")
            return
        established = self.assoc.is_established
        peer = _peer_of(self.assoc)
        try:
            data = read_pdu(raw, self.limits, established=established)
        except PduRefused as refused:
            self._refuse(refused.kind, refused.message + " from %s: association aborted",
                         *refused.args_, peer)
            return
        except PduStalled as stalled:
            self._refuse("stalled-pdu", "aborted a stalled %s from %s: %s",
                         "PDU" if established else "association request", peer, stalled)
            return
        except OSError:
            self.event_queue.put("Evt17")
            return
        finally:
            if self.socket is not None and self.socket.socket is not None:
                self.socket.socket.settimeout(self.assoc.network_timeout)
        if not data:
            self.event_queue.put("Evt17")       # the peer closed the connection
            return
        try:
            pdu, event = self._decode_pdu(bytearray(data))
        except Exception:   # pynetdicom's decoders raise anything on malformed bytes
            self._refuse("undecodable-pdu", "refused an undecodable PDU of type 0x%02X "
                         "from %s", data[0], peer)
            return
        self.event_queue.put(event)
        self._recv_pdu.put(pdu)

    def _refuse(self, kind: str, message: str, *args) -> None:
        refusals.warning(kind, message, *args)
        self.refused = True
        self.event_queue.put("Evt19")   # invalid PDU: the state machine sends A-ABORT


def _peer_of(assoc) -> str:
    try:
        return f"{assoc.requestor.address}:{assoc.requestor.port}"
    except Exception:   # before the requestor's address is known
        return "an unknown peer"


class GuardedRequestHandler(RequestHandler):
    """Each connection's association reads through ``GuardedDUL``; the handler's thread
    lives as long as the association, so the server knows when a connection's slot frees."""

    def handle(self) -> None:
        assoc = self._create_association()
        evt.trigger(assoc, evt.EVT_CONN_OPEN, {"address": self.client_address})
        assoc.start()
        assoc.join()

    def _create_association(self):
        assoc = super()._create_association()
        guarded = GuardedDUL(assoc, self.server.limits)
        # The socket, and the connection event (Evt5) its creation queued, move across.
        guarded.socket, guarded.event_queue = assoc.dul.socket, assoc.dul.event_queue
        assoc.dul = guarded
        # The timers were set on the replaced DUL; the association's setters set them again.
        assoc.acse_timeout = assoc.acse_timeout
        assoc.network_timeout = assoc.network_timeout
        return assoc


class GuardedAssociationServer(ThreadedAssociationServer):
    """A threaded association server that counts open connections in total and per peer
    address, and closes a new one at once beyond either limit."""

    def __init__(self, *args, limits: PeerLimits, **kwargs):
        self.limits = limits
        self.connections: Counter[str] = Counter()
        self.connections_lock = threading.Lock()
        super().__init__(*args, request_handler=GuardedRequestHandler, **kwargs)

    def verify_request(self, request, client_address) -> bool:
        host = str(client_address[0])
        with self.connections_lock:
            total = sum(self.connections.values())
            if total >= self.limits.max_connections:
                refused = f"all {self.limits.max_connections} connections are in use"
            elif self.connections[host] >= self.limits.max_connections_per_peer:
                refused = (f"{host} already holds {self.limits.max_connections_per_peer} "
                           "connections, its share")
            else:
                self.connections[host] += 1
                return True
        refusals.warning("connection-limit", "closed a new connection from %s: %s", host,
                         refused)
        return False

    def get_request(self):
        client_socket, address = self.socket.accept()
        if self.ssl_context:
            # The handshake waits for the connection's thread (``_handshake``).
            client_socket = self.ssl_context.wrap_socket(
                client_socket, server_side=True, do_handshake_on_connect=False)
        return client_socket, address

    def process_request_thread(self, request, client_address) -> None:
        try:
            if isinstance(request, ssl.SSLSocket) and not self._handshake(request,
                                                                          client_address):
                self.shutdown_request(request)
                return
            super().process_request_thread(request, client_address)
        finally:
            host = str(client_address[0])
            with self.connections_lock:
                self.connections[host] -= 1
                if self.connections[host] <= 0:
                    del self.connections[host]

    def _handshake(self, request: ssl.SSLSocket, client_address) -> bool:
        """The TLS handshake, whole within ``association_request_seconds``: a per-``recv``
        timeout alone would let a dripping peer stretch it without end."""
        expired = threading.Timer(self.limits.association_request_seconds, _cut, [request])
        expired.start()
        try:
            request.do_handshake()
            return True
        except (ssl.SSLError, OSError) as error:
            reason = getattr(error, "reason", None) or type(error).__name__
            refusals.warning("tls", "TLS handshake with %s failed: %s", client_address[0],
                             "no answer in time" if expired.finished.is_set() else reason)
            return False
        finally:
            expired.cancel()


def _cut(connection: socket.socket) -> None:
    try:
        connection.shutdown(socket.SHUT_RDWR)   # wakes the blocked handshake
    except OSError:
        pass
