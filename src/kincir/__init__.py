"""kincir: an in-process message broker for Python.

Topics, fan-out to many subscribers, per-topic sequence numbers, TTL, bounded queues, health and
statistics, from threads and from asyncio. Start with ``kincir.memory.InMemoryBroker``.
"""

import logging

from kincir_core import IMPLEMENTATION as IMPLEMENTATION
from kincir_core import Message as Message

from ._awaitable import Completed as Completed
from ._stats import PublisherStats as PublisherStats
from ._stats import SubscriberStats as SubscriberStats
from .errors import AckError as AckError
from .errors import BackendError as BackendError
from .errors import BrokerShutdown as BrokerShutdown
from .errors import ConnectionFailed as ConnectionFailed
from .errors import DecodeError as DecodeError
from .errors import EncodeError as EncodeError
from .errors import KincirError as KincirError
from .errors import NotSubscribed as NotSubscribed
from .errors import TopicClosed as TopicClosed
from .errors import Unsupported as Unsupported
from .protocols import AckSubscriber as AckSubscriber
from .protocols import Publisher as Publisher
from .protocols import Subscriber as Subscriber
from .router import AckStrategy as AckStrategy
from .router import Delivery as Delivery
from .router import Router as Router
from .router import RouterStats as RouterStats

__version__ = "0.1.0"

# Records go to the application's handlers; without any, nothing is printed (a library never
# configures logging for its user).
logging.getLogger("kincir").addHandler(logging.NullHandler())

__all__ = [
    "IMPLEMENTATION",
    "AckError",
    "AckStrategy",
    "AckSubscriber",
    "BackendError",
    "BrokerShutdown",
    "Completed",
    "ConnectionFailed",
    "DecodeError",
    "Delivery",
    "EncodeError",
    "KincirError",
    "Message",
    "NotSubscribed",
    "Publisher",
    "PublisherStats",
    "Router",
    "RouterStats",
    "Subscriber",
    "SubscriberStats",
    "TopicClosed",
    "Unsupported",
    "__version__",
]
