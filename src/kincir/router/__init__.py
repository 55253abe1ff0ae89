"""``Router``: kincir's pipeline stage — consume a topic, handle each message (or each batch),
publish the results.

A router reads its input topic through a consumer group of acknowledging subscribers (one per
worker, so ``concurrency`` workers share the stream and several routers with the same group
scale out), calls the handler with each message (with ``batch_size``: with a list of the
messages ready, up to that many), publishes what the handler returns to the output topic, then
settles the messages according to its ``AckStrategy``. When its input topic is closed and
drained, it closes its output topic: the end flows down a pipeline (``join``,
``wait_closed``). A handler exception or a processing
timeout never stops the router: the messages are nacked (redelivered, up to
``max_deliveries``, then dead-lettered) and counted.

Workers are threads for a plain handler (``start()``/``stop()``) and asyncio tasks for a
coroutine handler (``await run()``; ``start()`` also works, running the tasks on a loop of its
own thread). A plain handler under ``run()`` runs in the loop's default executor.

The modules, by concern: ``core`` (settings, lifecycle, worker loops), ``inputs`` (taking and
settling input messages, ``AckStrategy``, ``Delivery``), ``output`` (publishing, backpressure),
``watchdog`` (the processing timeout of thread workers), ``ending`` (the end of a run: at
the end of the input stream, which closes the output, or by a stop), ``stats``
(``RouterStats``).
"""

from __future__ import annotations

from .core import Router as Router
from .inputs import AckStrategy as AckStrategy
from .inputs import Delivery as Delivery
from .stats import RouterStats as RouterStats

__all__ = ["AckStrategy", "Delivery", "Router", "RouterStats"]

for _cls in (AckStrategy, Delivery, Router, RouterStats):
    _cls.__module__ = "kincir"
