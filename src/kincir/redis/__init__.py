"""kincir over Redis Streams (``pip install 'kincir[redis]'``, redis-py with asyncio).

A topic is a stream (key ``<prefix>t:<topic>``); a batch is appended by one server-side script
that also advances the topic's sequence counter (``<prefix>s:<topic>``), so a batch is atomic
and sequence numbers are gapless per topic, as in memory. ``max_len`` trims streams
approximately (``XADD MAXLEN ~``): a reader that falls behind loses the oldest messages.

- ``RedisSubscriber(broker)``: reads with ``XREAD`` from the stream's end at ``subscribe``
  time (fan-out: every subscriber sees every message published after it subscribed).
- ``RedisSubscriber(broker, group="g")``: the members share a consumer group
  (``XREADGROUP ... NOACK``); the group is created at the stream's end when first joined and
  stays on the server (``RedisBroker.delete_group``).
- ``RedisAckSubscriber``: ``XREADGROUP`` without NOACK; ``ack`` is ``XACK``. A nack or a missed
  ack deadline marks the entry for reclaiming, and any member takes it over with ``XAUTOCLAIM``
  (so does any member, after ``ack_timeout``, for the entries of a member that died); the
  delivery count is the stream's ``times_delivered``. Without a group, each ack subscriber has a
  private group, destroyed when it closes.

End of stream: ``close_topic`` records the stream's last entry id under ``<prefix>e:<topic>``
(a script, atomic with the publish script, which refuses batches once it is set: TopicClosed). A
reader ends (TopicClosed, ``reading=True``) once an empty read finds it past the end of every
topic it reads: alone by its own position, in a group by the group's last delivered id (and, for
acknowledging groups, no entry pending), so every member ends. ``join_async`` waits for the
stream's groups only: plain ``XREAD`` readers are unknown to the server.
"""

from .._remote import RemoteAckHandle, set_public_module
from .ack import RedisAckSubscriber
from .broker import RedisBroker
from .publisher import RedisPublisher
from .subscriber import RedisSubscriber

__all__ = [
    "RedisAckSubscriber",
    "RedisBroker",
    "RedisPublisher",
    "RedisSubscriber",
]

AckHandle = RemoteAckHandle

set_public_module(__name__, RedisAckSubscriber, RedisBroker, RedisPublisher, RedisSubscriber)
