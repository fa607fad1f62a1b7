"""`stdout`: the report as indented JSON on standard output (the seed's default)."""

from __future__ import annotations

import trio

from kstat import sink


class StdoutSink:
    def __init__(self) -> None:
        sink.require_stdout()

    def __repr__(self) -> str:
        return "stdout"

    async def consume(self, events: trio.abc.ReceiveChannel[sink.Event]) -> None:
        report = await sink.final_report(events)
        if report is None:
            return
        # Encoded as it is written, on a worker thread: never held whole (12 MB at 10,000 programs).
        chunks = sink.report_json_chunks(report)
        await trio.to_thread.run_sync(lambda: sink.write_stdout(chunks, what="the report on standard output"))


def from_spec(argument: str | None) -> StdoutSink:
    if argument:
        raise sink.UsageError("stdout takes no argument")
    return StdoutSink()
