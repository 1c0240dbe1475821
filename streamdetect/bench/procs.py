"""The processes `streamdetect bench` starts besides `streamdetect worker`:

- ``python -m streamdetect.bench.procs null-worker``: the real worker (faust, handler, pipeline,
  offsets, metrics) on instant null models; settings from the environment as for the worker.
- ``python -m streamdetect.bench.procs bare BOOTSTRAP SOURCE SINK GROUP``: the broker's ceiling, a
  bare aiokafka loop that consumes uploads and produces one small record per upload (acks=all),
  committing after each batch is acknowledged. It prints ``ready`` once it owns its partitions.
- ``python -m streamdetect.bench.procs ceiling``: ``stream_ceiling`` (bench/ceiling.py), the
  worker's own per-upload work in a bare loop batched per poll; settings from the environment.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


def run_null_worker() -> None:
    from streamdetect import logs
    from streamdetect.settings import Settings
    from streamdetect.pipeline.null_models import NullModels
    from streamdetect.stream.worker import run_worker
    from streamdetect.app.wiring import build_handler

    settings = Settings.load()
    logs.configure(settings.log_level, settings.log_json)
    run_worker(settings, build_handler(settings, NullModels()))


async def start_loop(consumer: AIOKafkaConsumer, producer: AIOKafkaProducer) -> asyncio.Event:
    """Start both clients, join the group and say ready on stdout (the bench waits for it); the
    event is set on SIGTERM. The bare loop and the stream ceiling (bench/ceiling.py) share it."""
    await consumer.start()
    await producer.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    while not consumer.assignment():
        await consumer.getmany(timeout_ms=200)  # joins the group; the topics are empty yet
    print("ready", flush=True)
    return stop


async def bare_loop(bootstrap: str, source: str, sink: str, group: str) -> None:
    consumer = AIOKafkaConsumer(source, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    stop = await start_loop(consumer, producer)
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200)
            futures = [await producer.send(sink, json.dumps({"upload_id": r.key.decode()}).encode(), key=r.key)
                       for records in batch.values() for r in records]
            if futures:
                await asyncio.gather(*futures)
                await consumer.commit()
    finally:
        await producer.stop()
        await consumer.stop()


def main(argv: list[str]) -> None:
    if argv[:1] == ["null-worker"]:
        run_null_worker()
    elif argv[:1] == ["bare"] and len(argv) == 5:
        asyncio.run(bare_loop(*argv[1:]))
    elif argv[:1] == ["ceiling"]:
        from streamdetect.bench.ceiling import run_ceiling

        run_ceiling()
    else:
        sys.exit("usage: python -m streamdetect.bench.procs null-worker | ceiling | bare BOOTSTRAP SOURCE SINK GROUP; "
                 f"got {argv}")


if __name__ == "__main__":
    main(sys.argv[1:])
