"""What the backends on distributed engines (Redis, RabbitMQ, Kafka) share.

A backend provides a broker (owns the connection), a publisher, a subscriber and an acknowledging
subscriber with the in-memory broker's async API. The classes here keep everything that does not
depend on the engine: argument checks, the message envelope (payload, metadata, uuid, enqueue
time), the local receive buffer and its timeouts, ack handles and the dead-letter decision. A
backend subclasses them and implements the ``_``-prefixed hooks.

Modules, by role (as aio-pika splits its own):
- ``envelope``: the wire envelope, a message as payload + string headers and back
  (``encode_message``, ``decode_message``, ``to_messages``).
- ``connection``: the connection lifecycle (``RemoteBroker``, ``resolve_broker``) and
  ``guarded``, through which every call to a server goes (timeouts, error translation).
- ``publisher``: ``RemotePublisher``.
- ``subscriber``: ``RemoteSubscriber``, the fetch buffer shared by concurrent receives and the
  reconnect loop; ``Delivered``, a fetched message.
- ``ack``: ``RemoteAckHandle`` and ``RemoteAckSubscriber`` (in flight, deadlines, redelivery,
  dead letters), on the ack rules every backend shares (``kincir._ack``).
The backends themselves are described in one registry, ``kincir._backends``.

Delivery rules shared by every backend (the conformance suite checks them):
- ``receive(timeout)`` raises ``TimeoutError`` when nothing arrives in time and
  ``BrokerShutdown`` once the broker is closed; a network failure raises ``ConnectionFailed``.
- A handle's ``delivery_count`` counts deliveries of the message to the group (1 first); past
  ``max_deliveries`` the message goes to ``dead_letter_topic`` with the metadata keys
  ``_dead_letter_reason``, ``_delivery_count``, ``_original_topic``, ``_original_sequence``
  (as the in-memory broker does), or is dropped.
- Codecs: the broker's ``codec`` (default ``BytesCodec``), or a publisher's or subscriber's own,
  encodes payloads as they are published and decodes them as they are handed out; the codec's
  content type travels in the ``kincir-content-type`` header. A message the subscriber's codec
  cannot decode raises ``DecodeError`` from the receive that reaches it and is consumed (the
  subscription goes on); an acknowledging subscriber dead-letters it instead (reason
  ``"undecodable: <why>"``) when it has a dead-letter topic. Dead letters and redeliveries are
  sent as they arrived, byte for byte, with their content type.
"""

from .ack import UNDECODABLE, RemoteAckHandle, RemoteAckSubscriber
from .connection import RemoteBroker, guarded, resolve_broker
from .envelope import (
    CONTENT_TYPE_KEY,
    ENQUEUED_KEY,
    UUID_KEY,
    check_codec,
    decode_message,
    encode_message,
    open_message,
    to_messages,
)
from .publisher import RemotePublisher
from .subscriber import POLL_SECONDS, Delivered, RemoteSubscriber

__all__ = [
    "CONTENT_TYPE_KEY",
    "ENQUEUED_KEY",
    "POLL_SECONDS",
    "UNDECODABLE",
    "UUID_KEY",
    "Delivered",
    "RemoteAckHandle",
    "RemoteAckSubscriber",
    "RemoteBroker",
    "RemotePublisher",
    "RemoteSubscriber",
    "check_codec",
    "decode_message",
    "encode_message",
    "guarded",
    "open_message",
    "resolve_broker",
    "set_public_module",
    "to_messages",
]


def set_public_module(module: str, *classes: type) -> None:
    """Give each of a backend's ``classes`` the ``__module__`` ``module`` (its package): where
    they are documented and imported from."""
    for cls in classes:
        cls.__module__ = module
