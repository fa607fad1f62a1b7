"""kstat's public sink API: everything a sink needs, and nothing else.

Built-in sinks (`kstat.sinks`, the repository's top-level `sinks/` folder) use exactly this
module, as third-party sinks do; both are found through the `kstat.sinks` entry-point group.
A sink is a format over a transport, and both are here to reuse: the formats (report JSON,
NDJSON lines and records, StatsD lines, the Prometheus exposition, the OTLP mapping) are pure
encoders; the transports are the atomic file (`write_atomically`, with its fallback), whole
lines appended to a file or standard output (`LineStream`), lines to a server over UDP or TCP
(`LineSender`) and the loopback HTTP endpoint (`HttpEndpoint`).

    class MySink:
        async def consume(self, events: trio.abc.ReceiveChannel[kstat.sink.Event]) -> None:
            async for event in events:
                if isinstance(event, kstat.sink.IntervalEnded):
                    for key, line in event.delta.lines.items():   # programs that did something
                        ...
                elif isinstance(event, kstat.sink.WindowEnded):
                    ...  # event.report
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kstat import _version
from kstat._atomic import check_writable as check_writable
from kstat._atomic import is_fifo as is_fifo
from kstat._atomic import open_fifo_without_waiting as open_fifo_without_waiting
from kstat._atomic import open_for_append as open_for_append
from kstat._atomic import shown as shown
from kstat._atomic import write_atomically as write_atomically
from kstat._atomic import write_fallback as write_fallback
from kstat._atomic import write_fd as write_fd
from kstat._lazy import LazyNames
from kstat._logging import get_logger as get_logger
from kstat._stdio import require_stdout as require_stdout
from kstat._stdio import write_stdout as write_stdout
from kstat.core.catalogue import METRICS as METRICS
from kstat.core.catalogue import Kind as Kind
from kstat.core.catalogue import Metric as Metric
from kstat.core.catalogue import Number as Number
from kstat.core.catalogue import Span as Span
from kstat.core.catalogue import View as View
from kstat.core.catalogue import in_view as in_view
from kstat.core.counters import COUNTERS as COUNTERS
from kstat.core.counters import Counters as Counters
from kstat.core.delta import IntervalDelta as IntervalDelta
from kstat.core.delta import ProgramChange as ProgramChange
from kstat.core.events import Event as Event
from kstat.core.events import IntervalEnded as IntervalEnded
from kstat.core.events import ReopenFiles as ReopenFiles
from kstat.core.events import Sink as Sink
from kstat.core.events import WindowEnded as WindowEnded
from kstat.core.events import WindowStarted as WindowStarted
from kstat.core.events import final_report as final_report
from kstat.core.model import ProgramDetails as ProgramDetails
from kstat.core.model import ProgramIdentity as ProgramIdentity
from kstat.core.model import ProgramOwner as ProgramOwner
from kstat.core.model import ProgramStats as ProgramStats
from kstat.core.model import Snapshot as Snapshot
from kstat.core.model import Workload as Workload
from kstat.core.report import ProgramReport as ProgramReport
from kstat.core.report import Report as Report
from kstat.core.report import report_keys
from kstat.core.sighting import Sighting as Sighting
from kstat.engine.sink_specs import split_options as split_options
from kstat.errors import ExtraMissing as ExtraMissing
from kstat.errors import OutputClosed as OutputClosed
from kstat.errors import OutputError as OutputError
from kstat.errors import SinkError as SinkError
from kstat.errors import UsageError as UsageError
from kstat.formats.report_json import report_json_chunks as report_json_chunks
from kstat.formats.report_json import report_to_dict as report_to_dict
from kstat.formats.report_json import report_to_json as report_to_json
from kstat.formats.report_json import report_to_json_bytes as report_to_json_bytes
from kstat.text import for_statsd_names as for_statsd_names
from kstat.text import for_statsd_tag as for_statsd_tag
from kstat.text import for_terminal as for_terminal

KSTAT_VERSION = _version.__version__

# Not `typing.TYPE_CHECKING`: the block below is read by kstat._lazy too.
TYPE_CHECKING = False

# Imported on first use (kstat._lazy): the transports and the formats a given sink may not
# need. A window written to a JSON file never loads the StatsD, Prometheus, OTLP, NDJSON or
# HTTP code (0.7 MB of kstat's memory); each is here for the sink that asks for it.
if TYPE_CHECKING:
    from kstat._append import LineStream as LineStream
    from kstat._datagrams import MAX_UDP_PAYLOAD as MAX_UDP_PAYLOAD
    from kstat._datagrams import LineSender as LineSender
    from kstat._datagrams import batch_datagrams as batch_datagrams
    from kstat._http import EndpointStatistics as EndpointStatistics
    from kstat._http import HttpEndpoint as HttpEndpoint
    from kstat._http import HttpRequest as HttpRequest
    from kstat._http import HttpResponse as HttpResponse
    from kstat.formats import otlp as _otlp
    from kstat.formats import prometheus as _prometheus
    from kstat.formats import statsd as _statsd
    from kstat.formats.ndjson import interval_to_dict as interval_to_dict
    from kstat.formats.ndjson import json_line as json_line
    from kstat.formats.ndjson import start_to_dicts as start_to_dicts
    from kstat.formats.ndjson import summary_line as summary_line
    from kstat.formats.ndjson import summary_to_dict as summary_to_dict
    from kstat.formats.records import RECORD_KEYS as RECORD_KEYS
    from kstat.formats.records import interval_records as interval_records
    from kstat.formats.records import start_records as start_records
    from kstat.formats.records import summary_records as summary_records

    # The Prometheus exposition (`kstat.formats.prometheus`): a pure encoder, kept up to date from
    # the events, that any transport can serve.
    PrometheusExposition = _prometheus.Exposition
    PrometheusFamily = _prometheus.Family
    PrometheusFormat = _prometheus.Format
    PrometheusSeries = _prometheus.Series
    RenderedExposition = _prometheus.Rendered
    negotiate_prometheus_format = _prometheus.negotiate
    prometheus_series_per_program = _prometheus.series_per_program

    # StatsD lines (`kstat.formats.statsd`): a pure encoder, sent by a `LineSender`.
    StatsdIntervalLines = _statsd.IntervalLines
    StatsdNaming = _statsd.Naming
    StatsdProgramName = _statsd.ProgramName
    statsd_metric_lines = _statsd.metric_lines
    statsd_program_lines = _statsd.program_lines
    statsd_total_lines = _statsd.total_lines

    # The OpenTelemetry mapping (`kstat.formats.otlp`): the catalogue's metrics as OTLP Sums and
    # Gauges, in values of kstat's own for a sink to hand to an OpenTelemetry exporter.
    OtlpState = _otlp.OtlpState
    OtlpMetric = _otlp.OtlpMetric
    OtlpShape = _otlp.Shape
    otlp_resource_attributes = _otlp.resource_attributes


_lazy = LazyNames(__name__)


def __getattr__(name: str) -> Any:
    return _lazy.get(name)


def __dir__() -> list[str]:
    return sorted({*_lazy.names(), *(name for name in globals() if not name.startswith("_"))})


def program_keys(programs: Sequence[ProgramStats]) -> list[str]:
    """Each program's key in `program_stats`, by the report's rule: its name where unique,
    `<name>#<id>` where not (a snapshot's programs, for a sink that names them all)."""
    return report_keys(programs)
