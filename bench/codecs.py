"""What each codec of ``kincir.codecs`` costs per message: encode + decode of a 4-key dict.

Inside one process kincir moves a payload by reference (``kincir bench``, W1o/W3o/W5o); a
message that leaves the process pays its codec once on each side. This script measures that
price for the payload of the object workloads, a 4-key dict (``kincir.bench.harness.orders``):

    python bench/codecs.py                  # every codec whose package is installed
    python bench/codecs.py --runs 9 --number 50000

After an untimed warm-up pass, each run encodes then decodes ``--number`` distinct dicts (their
ids differ, as in the workloads) and divides the time by that number; the median over ``--runs``
runs is printed, in microseconds per message, for encode + decode and for each alone, with the
mean size of an encoded payload. ``BytesCodec`` is left out (it takes bytes, not a dict).
``MsgspecCodec`` round-trips a ``msgspec.Struct`` of the same four fields, built from the dicts
before the clock starts: its decoding validates into that type, which is what it is for.
MsgpackCodec and MsgspecCodec need their extras (``pip install 'kincir[msgpack]'`` /
``'kincir[msgspec]'``); without them their rows say so.
"""

from __future__ import annotations

import argparse
import functools
import gc
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from kincir import codecs
from kincir.bench.harness import ORDER_KEYS, orders, release_orders

clock = time.perf_counter_ns


@functools.cache  # one class: the codec decodes into it and its encode checks isinstance
def order_struct() -> type:
    """A ``msgspec.Struct`` of the dict's four fields (ImportError without msgspec)."""
    import msgspec

    class Order(msgspec.Struct):
        id: int
        sku: str
        qty: int
        price: float

    return Order


def contestants() -> list[tuple[str, Callable[[], Any], Callable[[dict[str, Any]], Any]]]:
    """(name, the codec's constructor, how a dict becomes the codec's payload) per codec."""

    def same(d: dict[str, Any]) -> Any:
        return d

    def struct(d: dict[str, Any]) -> Any:
        return order_struct()(**d)

    def msgspec_codec(format: str) -> Callable[[], Any]:
        return lambda: codecs.MsgspecCodec(order_struct(), format=format)  # type: ignore[arg-type]

    return [
        ("JsonCodec", codecs.JsonCodec, same),
        ("PickleCodec", codecs.PickleCodec, same),
        ("MsgpackCodec", codecs.MsgpackCodec, same),
        ("MsgspecCodec(Order, json)", msgspec_codec("json"), struct),
        ("MsgspecCodec(Order, msgpack)", msgspec_codec("msgpack"), struct),
    ]


def per_message(loop: Callable[[], object], number: int) -> float:
    """Microseconds per message of one run of ``loop`` over ``number`` messages."""
    gc.collect()  # a collection left over from the set-up must not land in the timed loop
    started = clock()
    loop()
    return (clock() - started) / number / 1000


def measure(codec: Any, payloads: Sequence[Any], runs: int) -> dict[str, float]:
    """Medians over ``runs`` runs, in us per message: encode+decode, encode, decode; and the
    mean size of an encoded payload in bytes."""
    encode, decode = codec.encode, codec.decode
    encoded = [encode(p) for p in payloads]
    # a codec that loses or changes the payload would be timing something else
    if decode(encoded[0]) != payloads[0] or decode(encoded[-1]) != payloads[-1]:
        raise AssertionError(f"{codec!r} does not round-trip the payload")

    def both() -> None:
        for p in payloads:
            decode(encode(p))

    def encode_all() -> None:
        for p in payloads:
            encode(p)

    def decode_all() -> None:
        for data in encoded:
            decode(data)

    n = len(payloads)
    both()  # a warm-up: the first pass is the slowest by far, whatever the codec
    times: dict[str, list[float]] = {"both": [], "encode": [], "decode": []}
    for _ in range(runs):
        times["both"].append(per_message(both, n))
        times["encode"].append(per_message(encode_all, n))
        times["decode"].append(per_message(decode_all, n))
    result = {name: statistics.median(values) for name, values in times.items()}
    result["bytes"] = statistics.mean(len(data) for data in encoded)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="encode + decode cost per message of each codec of kincir.codecs"
    )
    parser.add_argument("--runs", type=int, default=7, help="runs per codec, median shown")
    parser.add_argument("--number", type=int, default=20_000, help="messages per run")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.number < 1:
        parser.error("--runs and --number must be at least 1")
    dicts = orders(args.number)
    sample = dicts[min(1000, args.number - 1)]
    print(
        f"{ORDER_KEYS}-key dict payload, e.g. {sample!r}; {args.number:,} messages per run, "
        f"median of {args.runs} runs; Python {sys.version.split()[0]}"
    )
    header = f"{'codec':30} {'encode+decode':>14} {'encode':>10} {'decode':>10} {'size':>8}"
    print(header)
    print("-" * len(header))
    for name, make, convert in contestants():
        try:
            codec = make()
            payloads = [convert(d) for d in dicts]
        except ImportError as exc:
            print(f"{name:30} not measured: {exc}")
            continue
        r = measure(codec, payloads, args.runs)
        print(
            f"{name:30} {r['both']:11.2f} us {r['encode']:7.2f} us {r['decode']:7.2f} us "
            f"{r['bytes']:6.1f} B"
        )
    release_orders()
    return 0


if __name__ == "__main__":
    sys.exit(main())
