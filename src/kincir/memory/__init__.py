"""kincir's in-memory broker: everything runs inside this process."""

from .ack import AckHandle as AckHandle
from .ack import InMemoryAckSubscriber as InMemoryAckSubscriber
from .broker import InMemoryBroker as InMemoryBroker
from .broker import InMemoryPublisher as InMemoryPublisher
from .broker import InMemorySubscriber as InMemorySubscriber
from .config import OVERFLOW_POLICIES as OVERFLOW_POLICIES
from .config import InMemoryConfig as InMemoryConfig
from .errors import AckError as AckError
from .errors import BrokerShutdown as BrokerShutdown
from .errors import GroupNotFound as GroupNotFound
from .errors import InMemoryError as InMemoryError
from .errors import InvalidConfig as InvalidConfig
from .errors import InvalidTopicName as InvalidTopicName
from .errors import MaxSubscribersReached as MaxSubscribersReached
from .errors import MaxTopicsReached as MaxTopicsReached
from .errors import NotSubscribed as NotSubscribed
from .errors import QueueFull as QueueFull
from .errors import TopicClosed as TopicClosed
from .errors import TopicNotFound as TopicNotFound
from .health import BrokerHealth as BrokerHealth
from .health import StatsSnapshot as StatsSnapshot
from .health import TopicInfo as TopicInfo

__all__ = [
    "OVERFLOW_POLICIES",
    "AckError",
    "AckHandle",
    "BrokerHealth",
    "BrokerShutdown",
    "GroupNotFound",
    "InMemoryAckSubscriber",
    "InMemoryBroker",
    "InMemoryConfig",
    "InMemoryError",
    "InMemoryPublisher",
    "InMemorySubscriber",
    "InvalidConfig",
    "InvalidTopicName",
    "MaxSubscribersReached",
    "MaxTopicsReached",
    "NotSubscribed",
    "QueueFull",
    "StatsSnapshot",
    "TopicClosed",
    "TopicInfo",
    "TopicNotFound",
]
