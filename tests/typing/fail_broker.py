"""Misuse of configuration, acknowledgement, health and the Router: each marked line must be a
mypy error."""

from __future__ import annotations

from kincir import AckStrategy, Message, Publisher, Router
from kincir.memory import InMemoryAckSubscriber, InMemoryBroker, InMemoryConfig, InMemorySubscriber

InMemoryConfig(overflow="fail")  # E: Argument "overflow" to "InMemoryConfig" has incompatible
InMemoryConfig.new().with_max_queue_size("100")  # E: Argument 1 to "with_max_queue_size"
InMemoryConfig.new().with_stats()  # E: Missing positional argument "enabled"
InMemoryBroker(max_queue_size=10)  # E: Unexpected keyword argument "max_queue_size"

broker = InMemoryBroker(InMemoryConfig.for_testing())
sub = InMemorySubscriber(broker, group=7)  # E: Argument "group" to "InMemorySubscriber"
acker = InMemoryAckSubscriber(broker, ack_timeout="30s")  # E: Argument "ack_timeout"
publisher: Publisher = InMemorySubscriber(broker)  # E: Incompatible types in assignment

broker.stats().messages_published()  # E: Item "None" of "StatsSnapshot | None" has no attribute
sub.stats().messages_consumed()  # E: "SubscriberStats" has no attribute "messages_consumed"
queued: str = broker.health_check().total_queued_messages  # E: (expression has type "int"
broker.topic_info("orders").queue_size = 0  # E: Property "queue_size" defined in "TopicInfo"


def settle(message: Message) -> None:
    acker.ack(message)  # E: incompatible type "Message[Any]"; expected "AckHandle"


def handler(message: Message) -> None:
    print(message)


Router(broker, "in", "out", handler, ack_strategy="manual")  # E: Argument "ack_strategy"
Router(broker, "in", "out", handler, concurrency=2.5)  # E: Argument "concurrency" to "Router"
count = Router(broker, "in", "out", handler).stats().procesed  # E: has no attribute "procesed"
strategy = AckStrategy.AUTO_ACK  # E: "type[AckStrategy]" has no attribute "AUTO_ACK"
