"""kincir over Kafka (``pip install 'kincir[kafka]'``, aiokafka).

A topic is a Kafka topic of one partition (``<prefix><topic>``, created on first use): one
partition keeps the topic's order, and ``Message.sequence`` is the offset + 1, gapless as long as
only kincir writes the topic (no transactions or compaction). Metadata and uuid travel as record
headers.

- ``KafkaSubscriber(broker)``: no consumer group; the partition is assigned directly and read
  from its end at ``subscribe`` time (fan-out).
- ``group="g"``: a Kafka consumer group ``<prefix><group>``. The first ``subscribe`` of a new
  group commits the topic's end offset for it, so the group starts with the messages published
  after that. One partition means one member of a group reads a topic at a time; the others
  take over when it leaves (each message still goes to exactly one member).
- ``KafkaAckSubscriber``: auto-commit off; ``ack`` marks an offset done and commits the lowest
  offset not yet acked. A nack, a missed ack deadline or a closing member publishes the message
  to the group's retry topic (``<prefix>retry.<group>.<topic>``, read by the group's members
  only) with its delivery count in the ``kincir-delivery-count`` header, then marks the original
  done. Messages a crashed member had in flight come back from the committed offset, but Kafka
  does not count those deliveries.

A batch is published record by record (not a Kafka transaction): a connection lost mid-batch
may leave a prefix published.

``close_topic`` and ``join_async`` raise ``kincir.Unsupported`` (``broker.NO_END_OF_STREAM`` and
``broker.NO_JOIN`` say why): the backend cannot keep an end of stream.
"""

from .._remote import RemoteAckHandle, set_public_module
from .ack import KafkaAckSubscriber
from .broker import COUNT_HEADER as COUNT_HEADER
from .broker import SEQUENCE_HEADER as SEQUENCE_HEADER
from .broker import TOPIC_HEADER as TOPIC_HEADER
from .broker import KafkaBroker
from .publisher import KafkaPublisher
from .subscriber import KafkaSubscriber

__all__ = [
    "KafkaAckSubscriber",
    "KafkaBroker",
    "KafkaPublisher",
    "KafkaSubscriber",
]

AckHandle = RemoteAckHandle

set_public_module(__name__, KafkaAckSubscriber, KafkaBroker, KafkaPublisher, KafkaSubscriber)
