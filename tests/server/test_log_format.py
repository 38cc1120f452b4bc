"""Log formats (text / JSON lines), the lifecycle log's extras and the access log."""

from __future__ import annotations

import calendar
import json
import logging
import re
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from pyserving.manager.lifecycle_log import LifecycleLog
from pyserving.servable.errors import CancelledError, InternalError, InvalidArgumentError
from pyserving.servable.event_bus import EventBus
from pyserving.servable.ids import ServableId
from pyserving.servable.state import ManagerState as M
from pyserving.servable.state import ServableState
from pyserving.server.access_log import ACCESS_LOGGER, AccessLog, AccessLogStatistics
from pyserving.server.log_format import JsonFormatter, configure_logging
from pyserving.server.request_events import RequestEvent

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def record(message: str = "hello %s", args: tuple[object, ...] = ("world",), level: int = logging.INFO,
           name: str = "pyserving.test", **extra: object) -> logging.LogRecord:
    rec = logging.getLogger(name).makeRecord(name, level, __file__, 1, message, args, None, extra=extra or None)
    return rec


def as_json(rec: logging.LogRecord) -> dict[str, object]:
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    return json.loads(line)


# --- the JSON formatter ----------------------------------------------------------------------


def test_fields_of_a_plain_record() -> None:
    rec = record()
    rec.created, rec.msecs = 1714564800.1239, 123.9  # 2024-05-01T12:00:00.123Z
    assert as_json(rec) == {
        "timestamp": "2024-05-01T12:00:00.123Z",
        "level": "INFO",
        "logger": "pyserving.test",
        "event": "hello world",  # no event extra: the message
        "message": "hello world",
    }
    assert list(as_json(rec)) == ["timestamp", "level", "logger", "event", "message"]


def test_timestamp_is_utc_now_with_milliseconds() -> None:
    before = time.time()
    fields = as_json(record(level=logging.WARNING))
    after = time.time()
    stamp = str(fields["timestamp"])
    assert TIMESTAMP.fullmatch(stamp), stamp
    seconds = calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")) + int(stamp[20:23]) / 1000
    assert int(before * 1000) / 1000 - 0.001 <= seconds <= after
    assert fields["level"] == "WARNING"


def test_extras_model_version_event_and_access_fields_in_order() -> None:
    fields = as_json(record("{name: m version: 3} LOADING", (), model="m", version=3, event="version_loading",
                            unrelated="left out"))
    assert fields["event"] == "version_loading" and fields["message"] == "{name: m version: 3} LOADING"
    assert (fields["model"], fields["version"]) == ("m", 3)
    assert "unrelated" not in fields
    access = as_json(record("x", (), entrypoint="REST", api="predict", model="m", version=None, status="OK",
                            latency_ms=1.5, event="request"))
    assert list(access)[5:] == ["model", "version", "entrypoint", "api", "status", "latency_ms"]
    assert access["version"] is None and access["latency_ms"] == 1.5


def test_values_json_cannot_hold_become_text() -> None:
    class Named:
        def __str__(self) -> str:
            return "named"

    assert as_json(record("x", (), model=Named()))["model"] == "named"
    assert as_json(record("x", (), model=ServableId("m", 1)))["model"] == {"name": "m", "version": 1}  # dataclass
    fields = as_json(record("x", (), version=2**70))  # beyond 64 bits: every value as text
    assert fields["version"] == str(2**70) and fields["level"] == "INFO"
    assert as_json(record("two\nlines", ()))["message"] == "two\nlines"


def test_exception_and_stack_become_fields() -> None:
    try:
        raise ValueError("bad value")
    except ValueError:
        rec = logging.getLogger("t").makeRecord("t", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    fields = as_json(rec)
    assert fields["message"] == "failed" and fields["level"] == "ERROR"
    assert str(fields["traceback"]).startswith("Traceback (most recent call last):")
    assert str(fields["traceback"]).endswith("ValueError: bad value")
    rec = record()
    rec.stack_info = "Stack (most recent call last):\n  here"
    assert as_json(rec)["stack"] == rec.stack_info and "traceback" not in as_json(rec)


def test_bad_format_or_level_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgumentError, match=r"log format must be one of text, json, got 'xml'"):
        configure_logging("xml", "INFO")
    with pytest.raises(InvalidArgumentError, match=r"log level must be one of DEBUG, .*, got 'loud'"):
        configure_logging("json", "loud")


def test_configured_elsewhere_is_left_alone(caplog: pytest.LogCaptureFixture) -> None:
    # pytest's capture handler is on the root logger: like an embedding program's.
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    held = [record("held line", (), level=logging.WARNING)]
    configure_logging("json", "DEBUG", held=held)
    assert root.handlers == handlers and root.level == level
    assert [r.getMessage() for r in caplog.records] == ["held line"]


_SCRIPT = textwrap.dedent('''
    import logging, sys, warnings
    from pyserving.server.log_format import HeldRecords, configure_logging
    held = HeldRecords()
    with held:
        logging.getLogger("early").warning("before %s", "configuring")
    configure_logging(sys.argv[1], "info", held=held)
    log = logging.getLogger("pyserving.x")
    log.info("hi", extra={"model": "m", "version": 2, "event": "loaded"})
    log.debug("hidden below INFO")
    warnings.warn("careful")
    try:
        1 / 0
    except ZeroDivisionError:
        log.exception("boom")
    configure_logging(sys.argv[1], "warning")  # again: replaces its handler, no duplicates
    log.info("hidden below WARNING")
    log.warning("last")
''')


def run_script(log_format: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", _SCRIPT, log_format], capture_output=True, text=True, timeout=60,
                          check=True)
    assert done.stdout == ""
    return done.stderr.splitlines()


def test_configure_json_on_stderr_held_records_and_warnings() -> None:
    lines = run_script("json")
    objects = [json.loads(line) for line in lines]  # every stderr line is one JSON object
    assert [(o["logger"], o["event"]) for o in objects] == [
        ("early", "before configuring"), ("pyserving.x", "loaded"), ("py.warnings", objects[2]["message"]),
        ("pyserving.x", "boom"), ("pyserving.x", "last"),
    ]
    assert (objects[1]["model"], objects[1]["version"]) == ("m", 2)
    assert "UserWarning: careful" in objects[2]["message"] and objects[2]["level"] == "WARNING"
    assert "ZeroDivisionError: division by zero" in objects[3]["traceback"]
    assert all(TIMESTAMP.fullmatch(o["timestamp"]) for o in objects)


def test_configure_text_is_the_readable_format() -> None:
    lines = run_script("text")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} W early\] before configuring", lines[0]), lines[0]
    assert lines[1].endswith(" I pyserving.x] hi")
    assert any("UserWarning: careful" in line for line in lines)  # Python's own warning output
    assert any(line.startswith("ZeroDivisionError") for line in lines)
    assert lines[-1].endswith(" W pyserving.x] last") and not any("hidden" in line for line in lines)


# --- the lifecycle log's extras ----------------------------------------------------------------


def test_lifecycle_lines_carry_model_version_and_event(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="test.lifecycle.extras")
    bus: EventBus[ServableState] = EventBus()
    lifecycle = LifecycleLog(bus, logger=logging.getLogger("test.lifecycle.extras"))
    try:
        for version, states in ((1, [M.START, M.LOADING, M.AVAILABLE, M.UNLOADING, M.END]),
                                (2, [M.START, M.LOADING]), (3, [M.START]), (4, [M.START, M.LOADING])):
            for state in states:
                bus.publish(ServableState(ServableId("m", version), state))
        bus.publish(ServableState(ServableId("m", 2), M.END, InternalError("disk on fire")))
        bus.publish(ServableState(ServableId("m", 3), M.END))
        bus.publish(ServableState(ServableId("m", 4), M.END, CancelledError("not wanted")))
    finally:
        lifecycle.close()
    seen = [(r.model, r.version, r.event) for r in caplog.records]  # type: ignore[attr-defined]
    assert seen == [
        ("m", 1, "version_found"), ("m", 1, "version_loading"), ("m", 1, "version_available"),
        ("m", 1, "version_unloading"), ("m", 1, "version_unloaded"),
        ("m", 2, "version_found"), ("m", 2, "version_loading"), ("m", 3, "version_found"),
        ("m", 4, "version_found"), ("m", 4, "version_loading"),
        ("m", 2, "version_load_failed"), ("m", 3, "version_not_loaded"), ("m", 4, "version_load_cancelled"),
    ]
    # the readable text is unchanged
    assert caplog.records[0].getMessage() == "{name: m version: 1} START: found, waiting to load"
    assert caplog.records[10].getMessage() == "{name: m version: 2} END: load failed: disk on fire"
    fields = as_json(caplog.records[2])
    assert (fields["model"], fields["version"], fields["event"]) == ("m", 1, "version_available")
    assert str(fields["message"]).startswith("{name: m version: 1} AVAILABLE")


# --- the access log -----------------------------------------------------------------------------


def event(model: str = "half", version: int | None = 2, api: str = "predict", entrypoint: str = "REST",
          status: str = "OK", latency_s: float = 0.00084) -> RequestEvent:
    return RequestEvent(model, version, api, entrypoint, status, latency_s)


def access_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == ACCESS_LOGGER]


def test_access_lines_from_events(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    clock = iter([1714564800.5, 1714564801.25]).__next__
    log = AccessLog(start_thread=False, clock=clock)
    log.observe(event())
    log.observe(event("nope", None, "GetModelStatus", "GRPC", "NOT_FOUND", 0.00005))
    assert access_records(caplog) == []  # nothing is written on the request thread
    assert log.step() == 2
    first, second = access_records(caplog)
    assert first.getMessage() == "REST predict model=half version=2 status=OK latency_ms=0.84"
    assert second.getMessage() == "GRPC GetModelStatus model=nope version=- status=NOT_FOUND latency_ms=0.05"
    assert first.levelno == logging.INFO and first.created == 1714564800.5  # when the answer was ready
    fields = as_json(second)
    assert fields == {
        "timestamp": "2024-05-01T12:00:01.250Z", "level": "INFO", "logger": ACCESS_LOGGER, "event": "request",
        "message": second.getMessage(), "model": "nope", "version": None, "entrypoint": "GRPC",
        "api": "GetModelStatus", "status": "NOT_FOUND", "latency_ms": 0.05,
    }
    assert log.statistics() == AccessLogStatistics(written=2, dropped=0, queued=0)
    log.close()
    log.observe(event())  # after close: ignored
    assert log.step() == 0 and log.statistics().queued == 0


def test_full_queue_drops_and_reports_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    log = AccessLog(start_thread=False, queue_size=2)
    for _ in range(5):
        log.observe(event())
    assert log.statistics() == AccessLogStatistics(written=0, dropped=3, queued=2)
    log.step()
    records = access_records(caplog)
    assert [r.levelno for r in records] == [logging.INFO, logging.INFO, logging.WARNING]
    assert records[-1].getMessage().startswith("Access log: 3 lines dropped because more than 2 were waiting")
    log.step()
    assert len(access_records(caplog)) == 3  # reported once
    log.close()


def test_nothing_is_queued_when_info_is_off(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=ACCESS_LOGGER)
    log = AccessLog(start_thread=False)
    log.observe(event())
    assert log.statistics().queued == 0
    log.close()


def test_writer_thread_writes_everything_before_close_returns(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    log = AccessLog()
    for i in range(50):
        log.observe(event(version=i))
    log.close(timeout_s=30)
    assert [r.version for r in access_records(caplog)] == list(range(50))  # type: ignore[attr-defined]
    assert log.statistics().written == 50
    assert not any(t.name == "pyserving-access-log" and t.is_alive() for t in threading.enumerate())


def test_options_are_validated() -> None:
    for bad in (0, True, "3"):
        with pytest.raises(InvalidArgumentError, match="queue_size must be an int >= 1"):
            AccessLog(queue_size=bad, start_thread=False)  # type: ignore[arg-type]
