"""How messages refer to each other: a response to its request, an EVENT_ACK to its event.

Small pure helpers so the host and the agent apply the same pairing rules (request id echoed,
response type allowed for the request, RESPONSE.request_type naming the request).
"""

from __future__ import annotations

from .body import Body
from .catalogue import Kind
from .codec import Message
from .errors import MalformedHeaderError
from .ports import PortRef
from .requests import EventAck
from .responses import Response


def response_to(request: Message, body: Body, *, sequence: int, epoch: int | None = None) -> Message:
    """The response message answering `request`: same port index and request id, and by default
    the request's epoch (a handshake answer keeps epoch 0 even though it announces a new one)."""
    if request.kind is not Kind.REQUEST:
        raise MalformedHeaderError(f"{request.type.name} is not a request")
    check_response(request, Message(body, request.port_index, request.epoch, request.request_id, sequence))
    return Message(
        body,
        port_index=request.port_index,
        epoch=request.epoch if epoch is None else epoch,
        request_id=request.request_id,
        sequence=sequence,
    )


def check_response(request: Message, response: Message) -> None:
    """Raise MalformedHeaderError unless `response` is a valid answer to `request`."""
    if request.kind is not Kind.REQUEST:
        raise MalformedHeaderError(f"{request.type.name} is not a request")
    if response.request_id != request.request_id:
        raise MalformedHeaderError("response request id does not match the request")
    if response.port_index != request.port_index:
        raise MalformedHeaderError("response port index does not match the request")
    if response.type not in request.type.responses:
        raise MalformedHeaderError(f"{response.type.name} cannot answer {request.type.name}")
    body = response.body
    if isinstance(body, Response) and body.request_type is not request.type:
        raise MalformedHeaderError(f"RESPONSE names {body.request_type.name}, not {request.type.name}")


def ack_for(event: Message, *, request_id: int, sequence: int) -> Message:
    """The EVENT_ACK request acknowledging `event` (by its type, sequence number and port)."""
    if event.kind is not Kind.EVENT:
        raise MalformedHeaderError(f"{event.type.name} is not an event")
    port = getattr(event.body, "port", None)
    body = EventAck(event.type, event.sequence, port if isinstance(port, PortRef) else PortRef(0))
    return Message(body, event.port_index, event.epoch, request_id, sequence)
