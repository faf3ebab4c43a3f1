"""Coverage-guided fuzzing of the frame decoder with atheris (libFuzzer), outside the regular test suite.

Invariant: whatever bytes arrive, fed whole or split at any point, ``FrameDecoder`` either yields valid messages or
raises ``ProtocolError`` — never any other exception — and both feedings agree.

Run from the repository root (tests/fuzz/corpus holds one real frame of every message type; what the fuzzer learns
goes to .fuzz-corpus, which git ignores):

    .venv/bin/pip install '.[fuzz]'
    mkdir -p .fuzz-corpus
    .venv/bin/python tests/fuzz/atheris_decoder.py .fuzz-corpus tests/fuzz/corpus -max_total_time=60

``--make-corpus DIR`` rewrites the seed corpus from the current message catalogue.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

with atheris.instrument_imports():
    import cbor2
    from dfsd.protocol import FrameDecoder, ProtocolError, encode
    from dfsd.protocol import messages as m


def outcomes(chunks: list[bytes]) -> list[object]:
    """What the decoder makes of the chunks: the messages, then "error" if it refused the rest."""
    decoder = FrameDecoder()
    results: list[object] = []
    try:
        for chunk in chunks:
            decoder.receive_data(chunk)
            while (message := decoder.next_message()) is not None:
                results.append(_comparable(message))
    except ProtocolError:
        results.append("error")
    return results


def _comparable(message: m.Message) -> object:
    return bytes(message.data) if isinstance(message, m.Data) else message


def test_one_input(data: bytes) -> None:
    if not data:
        return
    split = data[0] % len(data)
    whole = outcomes([data[1:]])
    halves = outcomes([data[1 : split + 1], data[split + 1 :]])
    # A refusal may come earlier when the bytes arrive whole (an oversized prefix is seen at once), but the messages
    # before it must be the same.
    assert [o for o in whole if o != "error"] == [o for o in halves if o != "error"][
        : len(whole) - whole.count("error")
    ]


def seed_frames() -> dict[str, bytes]:
    info = m.FileInfo("a/b.txt", 6, b"\x11" * 32, 100, 1.5, True)
    node = m.NodeInfo(100, "127.0.0.1", 9100, True, 1, 6, 10**9, 10**10, 2.5, 0, 0)
    samples: list[m.Message] = [
        m.Hello(1, "client", "dfsd/0.1", b"\x01" * 32),
        m.Welcome(1, "dfsd/0.1", b"\x02" * 32, b"\x03" * 32),
        m.Auth(b"\x04" * 32),
        m.Error(2, "file does not exist: 'x'"),
        m.Ok(),
        m.Data(b"hello\n"),
        m.End(b"\x05" * 32),
        m.Put("hello.txt", 6, b"\x06" * 32),
        m.Stored(6, b"\x07" * 32),
        m.Get("hello.txt", 1, 3),
        m.Sending(6, 0, 6, b"\x08" * 32),
        m.Delete("hello.txt"),
        m.Stat("hello.txt"),
        m.Info(info),
        m.List("a/", "a/a", 10),
        m.Listing([info, info], True),
        m.Status(),
        m.ClusterStatus([node], 1, 6, ["lost.txt"], m.RebalanceInfo(True, 3, 1, 7, True)),
        m.Rebalance(),
        m.Drain(101, True),
        m.Scrub(),
        m.ScrubReport(10, 1000, ["bad"], ["gone"], 2),
        m.Register(100, "127.0.0.1", 9100, 10**10, 10**9),
        m.Inventory([1, 2, 3], False),
        m.Heartbeat(10**9, 10**10),
        m.Store(42, 6, b"\x09" * 32),
        m.Fetch(42, 0, 6),
        m.Transfer(42, "127.0.0.1", 9101, b"\x0a" * 32),
        m.Verify(42, b"\x0b" * 32),
        m.ListHeld(41),
        m.Remove(42),
    ]
    assert {type(sample) for sample in samples} == set(m.CATALOGUE.values()), "a message type has no seed"
    seeds = {sample.TYPE: encode(sample) for sample in samples}
    seeds["conversation"] = b"".join(seeds[name] for name in ("hello", "put", "data", "end"))
    seeds["raw_cbor_map"] = len(body := cbor2.dumps({"type": "ok"})).to_bytes(4, "big") + body
    return {name: b"\x00" + frame for name, frame in seeds.items()}  # first byte: where test_one_input splits


def make_corpus(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, frame in seed_frames().items():
        (directory / name).write_bytes(frame)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--make-corpus":
        make_corpus(Path(sys.argv[2]))
        return
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
