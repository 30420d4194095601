"""Integration tests: a pass that looks at everything is streamed in chunks
(sync/stream.py); small chunks here, so that every such pass of the suite
crosses chunk boundaries (an Email and its files must never be split)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from jmapsync.sync import stream


@pytest.fixture(autouse=True)
def small_stream_chunks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(stream, "CHUNK", 3)
    yield
