"""The encode batcher: shared batches keep order and vectors, isolate a failing
request, and share the encoder fairly between a large request and a small one."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future

import numpy as np
import pytest

from models.types import Recipe
from service.batching import EncodeBatcher
from tests.index.tiny_encoder import TinyEncoder

POISON = "this text breaks the encoder"


class GatedEncoder:
    """The tiny encoder, recording each batch it is given. Its first call waits for
    ``gate``, so a test can queue several requests while the encoder is busy. A batch
    holding ``POISON`` raises: a fault the tiny encoder has no real input for."""

    def __init__(self, inner: TinyEncoder) -> None:
        self.inner = inner
        self.dim = inner.dim
        self.fingerprint = inner.fingerprint
        self.device = inner.device
        self.gate = threading.Event()
        self.started = threading.Event()
        self.batches: list[list[str]] = []

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        self.started.set()
        self.gate.wait(timeout=30)
        self.batches.append(list(texts))
        if POISON in texts:
            raise ValueError("the encoder cannot take this input")
        return self.inner.encode_texts(texts)

    def encode_images(self, images: Sequence[object]) -> np.ndarray:
        raise NotImplementedError

    def encode_recipes(self, recipes: Sequence[Recipe]) -> np.ndarray:
        return self.inner.encode_recipes(recipes)


@pytest.fixture()
def gated() -> GatedEncoder:
    return GatedEncoder(TinyEncoder(dim=32, seed=0))


@pytest.fixture()
def batcher(gated: GatedEncoder) -> Iterator[EncodeBatcher]:
    shared = EncodeBatcher(gated, threading.Lock(), max_batch=4)  # type: ignore[arg-type]
    yield shared
    gated.gate.set()
    shared.close()


def _occupy(batcher: EncodeBatcher, gated: GatedEncoder) -> Future[np.ndarray]:
    """Queue one request and wait until the encoder is busy (held at the gate) with it."""
    first = batcher.submit("text", ["warm-up"])
    assert gated.started.wait(timeout=10)
    return first


def test_shared_batches_keep_each_requests_order_and_vectors(
    batcher: EncodeBatcher, gated: GatedEncoder
) -> None:
    _occupy(batcher, gated)
    requests = [["a bowl of bibimbap", "kimchi stew"], ["cold noodles"], ["pork", "rice", "egg"]]
    futures = [batcher.submit("text", texts) for texts in requests]
    gated.gate.set()

    for texts, future in zip(requests, futures, strict=True):
        alone = gated.inner.encode_texts(texts)
        np.testing.assert_allclose(future.result(timeout=10), alone, atol=1e-5)
    # The three requests were queued together, so they shared batches (6 inputs, batch 4).
    assert gated.batches[1:] == [
        ["a bowl of bibimbap", "cold noodles", "pork", "kimchi stew"],
        ["rice", "egg"],
    ]


def test_a_failing_input_fails_its_own_request_only(
    batcher: EncodeBatcher, gated: GatedEncoder
) -> None:
    _occupy(batcher, gated)
    before = batcher.submit("text", ["bulgogi"])
    poisoned = batcher.submit("text", [POISON])
    after = batcher.submit("text", ["japchae"])
    gated.gate.set()

    with pytest.raises(ValueError, match="cannot take this input"):
        poisoned.result(timeout=10)
    np.testing.assert_allclose(
        before.result(timeout=10), gated.inner.encode_texts(["bulgogi"]), atol=1e-5
    )
    np.testing.assert_allclose(
        after.result(timeout=10), gated.inner.encode_texts(["japchae"]), atol=1e-5
    )
    # Later requests still go through: the queue did not stall.
    assert batcher.submit("text", ["tteokbokki"]).result(timeout=10).shape == (1, 32)


def test_a_large_request_does_not_starve_a_small_one(
    batcher: EncodeBatcher, gated: GatedEncoder
) -> None:
    large = batcher.submit("text", [f"long text {i}" for i in range(12)])
    assert gated.started.wait(timeout=10)  # its first 4 are in the encoder now
    small = batcher.submit("text", ["one short query"])
    gated.gate.set()

    small.result(timeout=10)
    large.result(timeout=10)
    # One lock per request would encode all 12 before the query; round robin puts the
    # query into the very next batch.
    batch_of_small = next(i for i, batch in enumerate(gated.batches) if "one short query" in batch)
    assert batch_of_small == 1
    assert sum(len(batch) for batch in gated.batches) == 13


def test_closing_fails_queued_requests_instead_of_hanging(
    batcher: EncodeBatcher, gated: GatedEncoder
) -> None:
    _occupy(batcher, gated)
    queued = batcher.submit("text", ["never encoded"])
    closer = threading.Thread(target=batcher.close)
    closer.start()
    gated.gate.set()
    closer.join(timeout=10)
    # Either the thread took it into a batch before closing, or it fails: never hangs.
    try:
        assert queued.result(timeout=10).shape == (1, 32)
    except RuntimeError as exc:
        assert "shutting down" in str(exc)
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit("text", ["too late"])


def test_a_wait_gathers_requests_that_arrive_within_it(gated: GatedEncoder) -> None:
    gated.gate.set()
    waiting = EncodeBatcher(gated, threading.Lock(), max_batch=8, max_wait_s=5.0)  # type: ignore[arg-type]
    try:
        futures = [waiting.submit("text", [f"query {i}"]) for i in range(8)]
        for future in futures:
            future.result(timeout=10)
    finally:
        waiting.close()
    # 8 single-text requests filled one batch of 8 well before the 5 s wait ran out.
    assert gated.batches == [[f"query {i}" for i in range(8)]]


def test_batch_size_must_be_positive(gated: GatedEncoder) -> None:
    with pytest.raises(ValueError, match="max_batch"):
        EncodeBatcher(gated, threading.Lock(), max_batch=0)  # type: ignore[arg-type]
