"""Socket settings shared by the SCP and the sender."""

import socket

from pynetdicom import evt


def set_tcp_nodelay(event: evt.Event) -> None:
    """EVT_CONN_OPEN handler: send small DIMSE messages (responses) without Nagle's delay."""
    sock = event.assoc.dul.socket.socket
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
