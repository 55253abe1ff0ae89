"""kincir over RabbitMQ (``pip install 'kincir[rabbitmq]'``, aio-pika).

A topic is a durable fanout exchange (``<prefix><topic>``); messages are published persistent,
with publisher confirms, their metadata as AMQP headers and their uuid as ``message_id``.

- ``RabbitMQSubscriber(broker)``: an exclusive, auto-deleted queue bound to the exchange when
  ``subscribe`` returns (fan-out: every subscriber sees every message published after it).
- ``group="g"``: the members share one durable quorum queue (``<prefix><n>:<topic>.<group>``,
  ``n`` the topic's length), which outlives them (it keeps collecting messages while the group
  has no member) until ``RabbitMQBroker.delete_group``.
- ``RabbitMQAckSubscriber``: manual acks with ``prefetch`` unacked messages per member
  (``basic.qos``); ``ack`` is ``basic.ack``. A nack or a missed ack deadline publishes the
  message again to the same queue (the default exchange, routed by queue name) with its delivery
  count in the ``kincir-delivery-count`` header, then acks the original: the count is exact, and
  the retry goes to the back of the queue. Messages of a member whose connection died are
  requeued by the server (``redelivered``), counted as one more delivery. Past
  ``max_deliveries``, kincir publishes the message to the dead-letter topic's exchange.

There are no per-topic sequence numbers in AMQP: ``Message.sequence`` is 0. A batch is published
message by message (each confirmed): a connection lost mid-batch may leave a prefix published.
The connection is aio-pika's robust connection: after a server restart it reconnects and
restores exchanges, queues, bindings and consumers by itself.

``close_topic`` and ``join_async`` raise ``kincir.Unsupported`` (``broker.NO_END_OF_STREAM`` and
``broker.NO_JOIN`` say why): the backend cannot keep an end of stream.
"""

from .._remote import RemoteAckHandle, set_public_module
from .ack import RabbitMQAckSubscriber
from .broker import COUNT_HEADER as COUNT_HEADER
from .broker import RabbitMQBroker
from .publisher import RabbitMQPublisher
from .subscriber import RabbitMQSubscriber

__all__ = [
    "RabbitMQAckSubscriber",
    "RabbitMQBroker",
    "RabbitMQPublisher",
    "RabbitMQSubscriber",
]

AckHandle = RemoteAckHandle

set_public_module(
    __name__, RabbitMQAckSubscriber, RabbitMQBroker, RabbitMQPublisher, RabbitMQSubscriber
)
