"""Misuse of messages, publishing and receiving: each marked line must be a mypy error."""

from __future__ import annotations

from kincir import Message
from kincir.memory import InMemoryBroker, InMemoryPublisher, InMemorySubscriber

broker = InMemoryBroker.with_default_config()
pub = InMemoryPublisher(broker)
sub = InMemorySubscriber(broker)
sub.subscribe("orders")

Message(None, ["retries"])  # E: Argument 2 to "Message" has incompatible type "list[str]"
order: Message[dict[str, int]] = Message("text")  # E: Argument 1 to "Message" has incompatible
Message(b"x", {"retries": 3})  # E: Dict entry 0 has incompatible type "str": "int"
Message(b"x").with_metadata("retries", 3)  # E: Argument 2 to "with_metadata" of "Message"
pub.publish_nowait("orders", 5)  # E: type "int"; expected "list[Any] | tuple[Any, ...]"
pub.publish_nowait("orders", {"id": 1})  # E: type "dict[str, int]"; expected "list[Any] | tuple
pub.publish_sync("orders", b"x")  # E: type "bytes"; expected "list[Any] | tuple[Any, ...]"
pub.publish_sync("orders", [b"x"], timeout="1s")  # E: Argument "timeout" to "publish_sync"
pub.publish_now("orders", [b"x"])  # E: "InMemoryPublisher" has no attribute "publish_now"
pub.send_nowait("orders", b"x", {"k": "v"})  # E: Too many positional arguments for "send_nowait"
pub.send_nowait("orders", b"x", metadata={"k": 1})  # E: Dict entry 0 has incompatible type
pub.send_sync("orders", b"x", timeout="1s")  # E: Argument "timeout" to "send_sync"
sub.recieve_sync()  # E: "InMemorySubscriber" has no attribute "recieve_sync"
sub.receive_batch_sync()  # E: Missing positional argument "max_messages"


def first_payload() -> object:
    return sub.try_receive().payload  # E: Item "None" of "Message[Any] | None" has no attribute


def next_sequence() -> int:
    message = sub.receive_sync(timeout=1.0)
    return message.sequence + 1  # E: Unsupported operand types for + ("None" and "int")


async def forgot_await() -> None:
    message: Message = sub.receive()  # E: (expression has type "Coroutine[Any, Any, Message[Any]]"
    print(message)


def rewrite(message: Message) -> None:
    message.payload = b"changed"  # E: Property "payload" defined in "Message" is read-only
    message.metadata["key"] = "value"  # E: Unsupported target for indexed assignment
