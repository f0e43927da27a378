import pytest

from loadgen.sse import EventTooLarge, SSEError, SSEParser


def feed_all(chunks: list[bytes]) -> list[tuple[bytes, bytes]]:
    parser = SSEParser()
    events = []
    for chunk in chunks:
        events += parser.feed(chunk)
    return events + parser.finish()


def test_events_split_anywhere_come_out_whole():
    stream = b'data: {"a":1}\n\ndata: {"b":"\xc3\xa9"}\n\n: keep-alive\n\ndata: [DONE]\n\n'
    expected = [(b"", b'{"a":1}'), (b"", b'{"b":"\xc3\xa9"}'), (b"", b"[DONE]")]
    for size in range(1, len(stream) + 1):
        chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
        assert feed_all(chunks) == expected, size


def test_crlf_multiline_event_type_and_llamacpp_error_field():
    stream = b'event: error\r\ndata: line1\r\ndata: line2\r\n\r\nerror: {"code":500}\n\n'
    assert feed_all([stream]) == [(b"error", b"line1\nline2"), (b"error", b'{"code":500}')]


def test_last_event_without_blank_line_is_flushed_at_the_end():
    assert feed_all([b"data: a\n\ndata: b"]) == [(b"", b"a"), (b"", b"b")]


def test_comments_ids_and_retry_are_ignored():
    assert feed_all([b": hi\nid: 3\nretry: 10\ndata:x\n\n"]) == [(b"", b"x")]


def test_a_line_beyond_the_cap_is_an_error(monkeypatch):
    monkeypatch.setattr("loadgen.sse.MAX_EVENT_BYTES", 1000)
    parser = SSEParser()
    parser.feed(b"data: " + b"x" * 600)
    with pytest.raises(SSEError):
        parser.feed(b"x" * 600)


def test_event_type_survives_a_crlf_chunk_followed_by_lf_only_chunks():
    # a CRLF chunk that ends right after `event: error`, then LF-only line ends
    assert feed_all([b"event: error\r\n", b'data: {"e":1}\n\ndata: ok\n\n']) == [
        (b"error", b'{"e":1}'),
        (b"", b"ok"),
    ]


def test_mixed_line_ends_split_anywhere_keep_event_types():
    stream = b'event: error\r\ndata: {"e":1}\n\ndata: a\n\nevent: error\ndata: b\r\n\r\ndata: c\n\n'
    expected = [(b"error", b'{"e":1}'), (b"", b"a"), (b"error", b"b"), (b"", b"c")]
    for size in range(1, len(stream) + 1):
        chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
        assert feed_all(chunks) == expected, size
    for cut in range(1, len(stream)):
        assert feed_all([stream[:cut], stream[cut:]]) == expected, cut


def test_an_event_of_many_lines_is_capped_and_read_in_linear_time():
    parser = SSEParser(max_event_bytes=1_000_000)
    chunk = b"data: ab\n" * 7000  # 63 KB of short lines, one event that never ends
    kept = []
    with pytest.raises(EventTooLarge):
        for _ in range(100):
            parser.feed(chunk)
            kept.append(len(parser._partial))  # only the line still being read is kept, never the event
    assert len(kept) == 47 and max(kept) == 0  # 1 MB of data / 21 KB a chunk: the cap ended it
    parser = SSEParser(max_event_bytes=1_000_000)
    parser.feed(b"data: x")
    with pytest.raises(EventTooLarge):
        parser.feed(b"x" * 1_000_000)  # one line, no newline yet


def test_an_event_within_the_cap_whatever_its_lines():
    events = feed_all([b"data: a\n" * 3 + b"\n", b"data: " + b"b" * 5000 + b"\n\n"])
    assert events == [(b"", b"a\na\na"), (b"", b"b" * 5000)]


def test_a_line_trickled_in_tiny_chunks_is_held_at_about_its_own_size():
    # A server writing a long line two bytes at a time: the chunks, kept as a list, held ~20x the line
    # (a 32 MiB line: ~700 MB per request), although the byte budget counted only the line.
    import tracemalloc

    parser = SSEParser()
    tracemalloc.start()
    try:
        parser.feed(b"data: ")
        for _ in range(500_000):
            assert parser.feed(bytes([120, 120])) == []  # a fresh object each, as from a socket
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < 3 * 1_000_000, held
    assert parser.feed(b"\n\n") == [(b"", b"xx" * 500_000)]
