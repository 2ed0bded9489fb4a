"""Floe's coordinator<->executor wire protocol, written independently in Python.

Protobuf messages are encoded by hand (varint / length-delimited fields), so
the tests depend on the .proto field numbers only, not on generated code; the
MACs follow proto/src/auth.rs (HMAC-SHA256 over a label and
length-prefixed parts).  A test can therefore act as a rogue executor (with or
without the cluster secret) or forge any ticket.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Optional

import grpc

PROTOCOL_VERSION = 5  # floe-proto's PROTOCOL_VERSION


# ------------------------------------------------------------ protobuf by hand


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def pb_uint(field: int, value: int) -> bytes:
    return _varint(field << 3 | 0) + _varint(value)


def pb_bytes(field: int, value) -> bytes:
    if isinstance(value, str):
        value = value.encode()
    return _varint(field << 3 | 2) + _varint(len(value)) + value


def pb_decode(data: bytes) -> dict[int, list]:
    """Fields of a protobuf message: {field number: [values]} (varints as int,
    length-delimited as bytes)."""
    out: dict[int, list] = {}
    i = 0

    def varint():
        nonlocal i
        shift = result = 0
        while True:
            b = data[i]
            i += 1
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return result

    while i < len(data):
        key = varint()
        field, wire = key >> 3, key & 7
        if wire == 0:
            value = varint()
        elif wire == 2:
            n = varint()
            value, i = data[i : i + n], i + n
        else:
            raise ValueError(f"unexpected wire type {wire} in {data!r}")
        out.setdefault(field, []).append(value)
    return out


# ------------------------------------------------------------ MACs (auth.rs)


def mac(key: bytes, label: str, parts: list[bytes]) -> bytes:
    h = hmac.new(key, digestmod=hashlib.sha256)
    h.update(label.encode())
    for p in parts:
        h.update(len(p).to_bytes(8, "big"))
        h.update(p)
    return h.digest()


def register_proof(secret: bytes, cn: bytes, en: bytes, executor_id: str, endpoint: str,
                   version: int = PROTOCOL_VERSION, task_slots: int = 1) -> bytes:
    return mac(secret, "floe/register",
               [cn, en, executor_id.encode(), endpoint.encode(), version.to_bytes(4, "big"),
                task_slots.to_bytes(4, "big")])


def coordinator_proof(secret: bytes, cn: bytes, en: bytes, executor_id: str) -> bytes:
    return mac(secret, "floe/registered", [cn, en, executor_id.encode()])


def session_key(secret: bytes, cn: bytes, en: bytes, executor_id: str) -> bytes:
    return mac(secret, "floe/session", [cn, en, executor_id.encode()])


def shuffle_key(secret: bytes) -> bytes:
    return mac(secret, "floe/shuffle", [])


def task_mac(key: bytes, body: bytes) -> bytes:
    return mac(key, "floe/task", [body])


def shuffle_read_mac(key: bytes, body: bytes) -> bytes:
    return mac(key, "floe/shuffle-read", [body])


# ------------------------------------------------------------ messages


def task_definition(executor_id: str = "executor-x", protocol_version: int = PROTOCOL_VERSION,
                    query_id: str = "q-1", stage_id: int = 1, partition: int = 0,
                    plan: bytes = b"\x0a\x00", files: Optional[list[str]] = None,
                    nonce: Optional[bytes] = None) -> bytes:
    """floe.v1.TaskDefinition (a zero protocol_version is omitted, as proto3 does)."""
    group = b"".join(pb_bytes(1, pb_bytes(1, path) + pb_uint(2, 1)) for path in (files or []))
    return (
        (pb_uint(1, protocol_version) if protocol_version else b"")
        + pb_bytes(3, query_id)
        + pb_uint(4, stage_id)
        + pb_uint(5, partition)
        + pb_bytes(6, plan)
        + pb_bytes(7, group)
        + pb_bytes(10, executor_id)
        + pb_bytes(11, nonce if nonce is not None else os.urandom(32))
    )


def shuffle_read(protocol_version: int = PROTOCOL_VERSION, query_id: str = "q-1") -> bytes:
    """floe.v1.ShuffleRead."""
    return (
        pb_uint(1, protocol_version)
        + pb_bytes(3, query_id)
        + pb_uint(4, 1)
        + pb_uint(5, 0)
        + pb_uint(6, 0)
        + pb_bytes(7, os.urandom(32))
    )


def runtime_filter_keys(protocol_version: int = PROTOCOL_VERSION, query_id: str = "q-1",
                        overflow: bool = True) -> bytes:
    """floe.v1.RuntimeFilterKeys (keys, if any, would be an Arrow IPC stream)."""
    return (
        pb_uint(1, protocol_version)
        + pb_bytes(2, query_id)
        + pb_uint(3, 7)
        + pb_uint(4, 0)
        + pb_uint(5, int(overflow))
        + pb_bytes(7, os.urandom(32))
    )


def signed(body: bytes, tag: bytes) -> bytes:
    """floe.v1.Signed."""
    return pb_bytes(1, body) + pb_bytes(2, tag)


def task_ticket(body: bytes, tag: bytes) -> bytes:
    """FloeTicket { task: Signed }."""
    return pb_bytes(1, signed(body, tag))


def shuffle_ticket(body: bytes, tag: bytes) -> bytes:
    """FloeTicket { shuffle_read: Signed }."""
    return pb_bytes(2, signed(body, tag))


def runtime_filter_ticket(body: bytes, tag: bytes) -> bytes:
    """FloeTicket { runtime_filter: Signed }."""
    return pb_bytes(3, signed(body, tag))


# ------------------------------------------------------------ Flight SQL messages


def _any(type_name: str, value: bytes) -> bytes:
    """google.protobuf.Any (what Flight SQL commands and tickets are wrapped in)."""
    return pb_bytes(1, f"type.googleapis.com/{type_name}") + pb_bytes(2, value)


def forged_statement_ticket(sql: str) -> bytes:
    """A Flight SQL TicketStatementQuery whose handle is Floe's StatementHandle{sql}."""
    handle = pb_bytes(1, sql)  # floe.v1.StatementHandle.sql
    return _any("arrow.flight.protocol.sql.TicketStatementQuery", pb_bytes(1, handle))


def statement_command(sql: str) -> bytes:
    """A Flight SQL CommandStatementQuery (GetFlightInfo descriptor)."""
    return _any("arrow.flight.protocol.sql.CommandStatementQuery", pb_bytes(1, sql))


# ------------------------------------------------------------ control plane


class ControlPlane:
    """A client of floe.v1.ControlPlane on a coordinator's port."""

    def __init__(self, port: int, timeout: float = 15):
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.timeout = timeout

    def close(self) -> None:
        self.channel.close()

    def _call(self, method: str, request: bytes) -> dict[int, list]:
        call = self.channel.unary_unary(f"/floe.v1.ControlPlane/{method}",
                                        request_serializer=None, response_deserializer=None)
        return pb_decode(call(request, timeout=self.timeout))

    def challenge(self, version: int = PROTOCOL_VERSION) -> bytes:
        return self._call("Challenge", pb_uint(1, version) if version else b"")[1][0]

    def register(self, executor_id: str, endpoint: str, cn: bytes, en: bytes, proof: bytes,
                 version: int = PROTOCOL_VERSION, task_slots: int = 1) -> dict[int, list]:
        msg = pb_bytes(1, executor_id) + pb_bytes(2, endpoint)
        if version:
            msg += pb_uint(3, version)
        msg += pb_bytes(5, cn) + pb_bytes(6, en) + pb_bytes(7, proof)
        if task_slots:
            msg += pb_uint(8, task_slots)
        return self._call("Register", msg)

    def admit(self, secret: bytes, executor_id: str, endpoint: str) -> bytes:
        """Registers with the secret; returns the session key (after checking the
        coordinator's own proof)."""
        cn = self.challenge()
        en = os.urandom(32)
        resp = self.register(executor_id, endpoint, cn, en,
                             register_proof(secret, cn, en, executor_id, endpoint))
        assert hmac.compare_digest(resp[4][0], coordinator_proof(secret, cn, en, executor_id)), resp
        return session_key(secret, cn, en, executor_id)

    def heartbeat(self, executor_id: str, key: bytes, sequence: int, running: int = 0) -> dict[int, list]:
        proof = mac(key, "floe/heartbeat",
                    [executor_id.encode(), running.to_bytes(4, "big"), sequence.to_bytes(8, "big")])
        msg = pb_bytes(1, executor_id) + pb_uint(2, running) + pb_uint(3, sequence) + pb_bytes(4, proof)
        return self._call("Heartbeat", msg)
