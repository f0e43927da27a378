"""The snapshot's pieces without Prometheus: time, step and variables as Grafana resolves them, units as
people read them, legends, and the Prometheus client's budgets against hostile servers."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from grafana import catalog
from grafana.cli import main
from grafana.snapshot.fetch import legend_text
from grafana.snapshot.prometheus import (
    Budget,
    BudgetExceeded,
    Prometheus,
    PrometheusError,
    QueryFailed,
    Unreachable,
    safe_url,
)
from grafana.snapshot.resolve import (
    ResolveError,
    Window,
    parse_duration,
    parse_time,
    substitute,
    variable_values,
)
from grafana.snapshot.units import format_value
from tests.support.procs import free_port


def test_times_and_durations() -> None:
    now = 1_800_000_000.0
    assert parse_time("now", now) == now
    assert parse_time("now-1h30m", now) == now - 5400
    assert parse_time("2027-01-15T08:00:00Z") == datetime(2027, 1, 15, 8, tzinfo=UTC).timestamp()
    assert parse_time("2027-01-15T08:00:00+01:00") == parse_time("2027-01-15T07:00:00Z")
    assert parse_time("1800000000.5") == 1_800_000_000.5
    assert parse_duration("500ms") == 0.5 and parse_duration("2m") == 120
    for bad in ("yesterday", "2027-01-15T08:00:00", "now-ages"):
        with pytest.raises(ResolveError):
            parse_time(bad, now)


def test_window_step_and_rate_interval_as_grafana() -> None:
    hour = Window.choose(0, 3600, scrape_interval=15)
    assert hour.step == 15  # 3600 / 400 = 9 s, never below the scrape interval
    assert hour.builtins()["__rate_interval"] == "60s"  # max(15 + 15, 4 x 15)
    assert hour.builtins()["__range"] == "3600s"
    day = Window.choose(0, 86400, scrape_interval=15)
    assert day.step == 300 and day.builtins()["__rate_interval"] == "315s"
    assert Window.choose(0, 120, scrape_interval=1).builtins()["__rate_interval"] == "4s"
    with pytest.raises(ResolveError, match="empty"):
        Window.choose(10, 10)
    with pytest.raises(ResolveError, match="11,000"):
        Window.choose(0, 86400, step=1)


def test_variables_resolve_to_all_values_or_the_choice() -> None:
    board = catalog.find("load-tests")
    values = variable_values(board, {"run": "soak-1"})
    assert values == {"scenario": ".*", "run": "soak-1", "ttft_slo": "1.0", "tpot_slo": "0.1"}
    assert substitute('x{run_id=~"$run", le="${ttft_slo}"}[[tpot_slo]]', values) == (
        'x{run_id=~"soak-1", le="1.0"}0.1'
    )
    with pytest.raises(ResolveError, match=r"\$nope"):
        substitute("x{a=~'$nope'}", values)


def test_every_catalog_query_resolves() -> None:
    window = Window.choose(0, 3600)
    for board in catalog.dashboards():
        values = {**variable_values(board, {}), **window.builtins()}
        for panel in board.panels:
            for query in panel.queries:
                assert "$" not in substitute(query.expr, values), (board.name, panel.title)


def test_units_as_people_read_them() -> None:
    assert format_value(0.0123, "s") == "12.3 ms"
    assert format_value(1.5, "s") == "1.50 s"
    assert format_value(5000, "s") == "83.3 min"
    assert format_value(0.999, "percentunit") == "99.9%"
    assert format_value(12.3e9, "bytes") == "11.5 GiB"
    assert format_value(1.41e9, "hertz") == "1.41 GHz"
    assert format_value(3.0, "short") == "3" and format_value(1500, "short") == "1.50k"
    assert format_value(345.6, "watt") == "346 W"
    assert format_value(None, "s") == "-" and format_value(float("nan"), "s") == "NaN"
    assert format_value(2.5, "furlongs") == "2.50 furlongs"  # an unknown unit is kept, not dropped


def test_legends_as_grafana_writes_them() -> None:
    labels = {"__name__": "up", "target": "sim", "model": "m"}
    assert legend_text("{{target}} {{ model }} p95", labels, "x") == "sim m p95"
    assert legend_text("{{missing}} x", labels, "x") == "x"
    assert legend_text("__auto", labels, "x") == 'up{model="m", target="sim"}'
    assert legend_text("", {}, "sum(rate(a[1m]))") == "sum(rate(a[1m]))"


def test_credentials_never_shown() -> None:
    assert (
        safe_url("https://user:s3cret@prom.example:9090/prefix/?token=abc")
        == "https://prom.example:9090/prefix"
    )
    with pytest.raises(Unreachable) as caught:
        Prometheus(f"http://user:s3cret@127.0.0.1:{free_port()}", Budget(timeout_s=2)).check()
    assert "s3cret" not in str(caught.value) and "refused" in str(caught.value).lower()


def test_a_url_that_cannot_be_read_is_refused_clearly() -> None:
    """A bad port or a broken IPv6 host once ended `llmobs snapshot` in a traceback."""
    for url, reason in [
        ("http://user:s3cret@127.0.0.1:99999", "out of range"),
        ("http://user:s3cret@127.0.0.1:abc", "integer"),
        ("http://user:s3cret@[::1", "IPv6"),
    ]:
        with pytest.raises(PrometheusError, match=reason) as caught:
            Prometheus(url)
        assert "s3cret" not in str(caught.value)


def test_a_credential_no_header_can_carry_is_refused_unseen() -> None:
    """httpx refused a token with a line break by quoting the whole header, token and all."""
    with pytest.raises(PrometheusError, match="not shown") as caught:
        Prometheus("http://127.0.0.1:9", token="abc\ns3cret")
    assert "s3cret" not in str(caught.value)
    with pytest.raises(PrometheusError, match="not shown"):
        Prometheus("http://user:s3%0Acret@127.0.0.1:9")


def test_userinfo_is_decoded_and_no_answer_repeats_a_credential() -> None:
    with hostile("echo") as url:
        host = url.removeprefix("http://")
        with Prometheus(f"http://me:p%40ss@{host}") as prom, pytest.raises(QueryFailed) as caught:
            prom.query("up", 0)
        # p%40ss is sent decoded (p@ss), and its Basic header is not repeated
        assert str(caught.value) == "HTTP 200: Basic <redacted>"
        with Prometheus(url, token="s3cret-token") as prom, pytest.raises(QueryFailed) as caught:
            prom.query("up", 0)
        assert "s3cret" not in str(caught.value) and "<redacted>" in str(caught.value)


# ---------------------------------------------------------------------------------------- hostile servers


class _Hostile(http.server.BaseHTTPRequestHandler):
    behaviour = "ok"

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._answer()

    def _answer(self) -> None:
        behaviour = type(self).behaviour
        if behaviour == "slow":
            time.sleep(3)
        self.send_response(200)
        self.end_headers()
        if behaviour == "huge":
            for _ in range(64):
                self.wfile.write(b" " * 65536)
            return
        if behaviour == "html":
            self.wfile.write(b"<html>login</html>")
            return
        if behaviour == "error":
            self.wfile.write(b'{"status":"error","errorType":"bad_data","error":"parse error at char 3"}')
            return
        if behaviour == "echo":  # a proxy that quotes the request's credentials back in its error
            echo = json.dumps({"status": "error", "error": self.headers.get("Authorization", "")})
            self.wfile.write(echo.encode())
            return
        self.wfile.write(b'{"status":"success","data":{"version":"9.9"}}')

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def hostile(behaviour: str) -> Iterator[str]:
    handler = type("Handler", (_Hostile,), {"behaviour": behaviour})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_budget_on_answer_size() -> None:
    with (
        hostile("huge") as url,
        Prometheus(url, Budget(max_bytes=1_000_000)) as prom,
        pytest.raises(BudgetExceeded, match="1,000,000 bytes"),
    ):
        prom.query_range("up", 0, 60, 15)


def test_budget_on_time_per_query_and_in_all() -> None:
    with hostile("slow") as url:
        with Prometheus(url, Budget(timeout_s=0.5)) as prom:
            started = time.monotonic()
            with pytest.raises(Unreachable, match="no answer within"):
                prom.check()
            assert time.monotonic() - started < 2.5
        with Prometheus(url, Budget(timeout_s=5, deadline_s=0.3)) as prom:
            with pytest.raises(Unreachable):
                prom.query("up", 0)
            with pytest.raises(BudgetExceeded, match="time budget"):
                prom.query("up", 0)


def test_answers_that_are_not_prometheus() -> None:
    with (
        hostile("html") as url,
        Prometheus(url) as prom,
        pytest.raises(Unreachable, match="does not answer as Prometheus does"),
    ):
        prom.check()
    with hostile("error") as url, Prometheus(url) as prom, pytest.raises(QueryFailed, match="char 3"):
        prom.query("up{", 0)


def test_cli_refuses_clearly_and_writes_nothing(tmp_path, capsys) -> None:
    out = tmp_path / "s.html"
    url = f"http://admin:hunter2@127.0.0.1:{free_port()}"
    assert main(["snapshot", "--prometheus", url, "-o", str(out)]) == 2
    error = capsys.readouterr().err
    assert "cannot reach Prometheus at http://127.0.0.1:" in error and "hunter2" not in error
    assert not out.exists()
    assert main(["snapshot", "--prometheus", url, "--dashboard", "nope", "-o", str(out)]) == 2
    assert "choose one of overview, gpu, engine, load-tests" in capsys.readouterr().err
    assert main(["snapshot", "--prometheus", url, "--var", "colour=red", "-o", str(out)]) == 2
    assert "no such variable in these dashboards: colour" in capsys.readouterr().err
    assert main(["snapshot", "--prometheus", url, "--from", "now", "--to", "now-1h", "-o", str(out)]) == 2
    assert "--from must be before --to" in capsys.readouterr().err
    for broken in (
        "http://admin:hunter2@[::1",
        "http://admin:hunter2@h:99999",
        "http://admin:hunter2@h:８０",
    ):
        assert main(["snapshot", "--prometheus", broken, "-o", str(out)]) == 2  # was a traceback
        error = capsys.readouterr().err
        assert "--prometheus is not a usable URL" in error and "hunter2" not in error


def test_label_values_are_text_never_markup() -> None:
    from grafana.model import Panel, Query
    from grafana.snapshot.fetch import Line, PanelData
    from grafana.snapshot.figures import table_body, timeseries_figure
    from grafana.snapshot.page import script_json
    from grafana.snapshot.prometheus import Series

    hostile = '<a href="http://evil.example/">x</a><script>alert(1)</script>'
    panel = Panel("timeseries", "t", "d", (Query("up", "{{target}}"),))
    series = Series({"target": hostile}, [(0.0, 1.0), (15.0, float("nan"))])
    data = PanelData(panel, [Line(0, legend_text("{{target}}", series.labels, "up"), series)])
    figure = timeseries_figure(data, 200, 15)
    assert figure["data"][0]["name"].startswith("&lt;a href=")
    assert figure["data"][0]["y"] == [1.0, None]  # NaN is not drawn
    assert "</script" not in script_json(figure) and "<script>" not in table_body(data)


def test_time_ticks_tell_a_short_windows_ticks_apart() -> None:
    """A report's 2-minute Prometheus window had ticks reading 20:55 20:55 20:55 20:56 ..."""
    from grafana.snapshot.figures import time_tickformat

    assert time_tickformat(120) == "%H:%M:%S"
    assert time_tickformat(3600) == "%H:%M"
    assert time_tickformat(7 * 86400) == "%m-%d %H:%M"
