"""Pushes to a session while its client is away, as the protocol has them made.

Two ways, by what the adapter implements: an HTTP request to the backend
(``push_request``: agentws/1's ``POST /admin/notify`` with ``--admin-token``), or
the harness's own publisher (``publisher``: an MQTT client of its own that
publishes at QoS 1 to the session's topic and waits for each PUBACK). Either way
the answer is the push ids the backend took; a failure is recorded as an
``error`` (``admin notify failed``) with its reason in ``note``.
"""

from __future__ import annotations

import itertools
from time import monotonic

from contract.events import Detail, Kind

from .http_api import push as http_push
from .protocols import implements
from .transport import Closed, ConnectError, WebSocket

_publishers = itertools.count(1)


def push(client, session: str, pushes: list[tuple[int, dict]]) -> list[int]:
    """Have ``pushes`` ((push id, data) pairs) delivered to ``session``; the ids the backend took, in order."""
    if not pushes:
        return []
    if implements(type(client.adapter), "publisher"):
        sent, error = _publish(client, session, pushes)
    else:
        sent, error = _post(client, session, pushes)
    if error:
        client.record(Kind.ERROR, False, code="notify", detail=Detail.NOTIFY_FAILED, note=error)
    return sent


def can_push(client) -> bool:
    """The protocol has pushes, and the run has what they need (an admin token for an HTTP push)."""
    adapter = type(client.adapter)
    if implements(adapter, "publisher"):
        return True
    return implements(adapter, "push_request") and bool(client.settings.admin_token)


def _post(client, session: str, pushes) -> tuple[list[int], str]:
    sent = []
    for push_id, data in pushes:
        request = client.adapter.push_request(session, push_id, data)
        result = http_push(client.host, client.settings.admin_token, request.path, request.body, client.ssl)
        if not result.ok:
            return sent, str(result.error)
        sent.append(push_id)
    return sent, ""


def _publish(client, session: str, pushes) -> tuple[list[int], str]:
    """One publisher connection: open, publish every push, wait for the backend to take each, close."""
    publisher = client.adapter.publisher(session, pushes, str(next(_publishers)))
    s = client.settings
    try:
        ws = WebSocket.open(
            client.ws_url, timeout=s.connect_timeout_s, headers=s.header_dict(),
            subprotocols=client.subprotocols, ssl_context=client.ssl,
        )  # fmt: skip
    except ConnectError as e:
        return [], f"publisher could not connect: {e}"
    try:
        for frame in publisher.start():
            ws.send(frame)
        deadline = monotonic() + s.connect_timeout_s + s.reply_timeout_s
        while not publisher.done and (left := deadline - monotonic()) > 0:
            message = ws.recv(left)
            if message is None:
                break
            for frame in publisher.receive(message):
                ws.send(frame)
    except Closed as closed:
        publisher.error = publisher.error or f"publisher connection closed ({closed.code})"
    finally:
        ws.close(timeout=min(1.0, s.reply_timeout_s))
    error = publisher.error or ("" if publisher.done else "publisher: not every push acknowledged in time")
    return list(publisher.acknowledged), error
