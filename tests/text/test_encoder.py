"""Encoder: the real packaged MiniLM model against sentence-transformers' own encode."""

from __future__ import annotations

import numpy as np
import pytest

from lmrec.text.encoder import DEFAULT_MODEL_ID, TextEncoder, model_id_for

TEXTS = ["Toy Story (1995). Adventure, Animation, Children, Comedy, Fantasy",
         "Toy Story 2 (1999). Adventure, Animation, Children, Comedy, Fantasy",
         "Schindler's List (1993). Drama, War",
         "a", "Guitar strings that stay in tune", ""]


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder(device="cpu", batch_size=4)


def test_equals_sentence_transformers(encoder):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(encoder.path, device="cpu")
    ours = encoder.encode(TEXTS)
    theirs = st.encode(TEXTS, batch_size=64, normalize_embeddings=True)
    cos = (ours * theirs).sum(axis=1)
    assert ours.shape == (len(TEXTS), 384) and ours.dtype == np.float32
    assert cos.min() >= 0.99999, cos


def test_deterministic_and_unit_length(encoder):
    a, b = encoder.encode(TEXTS), encoder.encode(TEXTS)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)


def test_semantic_sequel_closer_than_unrelated(encoder):
    v = encoder.encode(TEXTS[:3])
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2


def test_long_review_is_truncated_by_tokens(encoder):
    long = " ".join(["wonderful"] * 10_000)
    v = encoder.encode([long, " ".join(["wonderful"] * 300)])
    assert encoder.max_length == 256
    # Both are cut at the token limit, so they embed the same.
    assert float(v[0] @ v[1]) > 0.9999


def test_model_id_carries_name_and_dimension():
    assert model_id_for() == f"{DEFAULT_MODEL_ID}/384"
    assert model_id_for(quantize=True) == f"{DEFAULT_MODEL_ID}/384/int8"


def test_int8_quantization_stays_close(encoder):
    q = TextEncoder(device="cpu", quantize=True)
    cos = (q.encode(TEXTS[:5]) * encoder.encode(TEXTS[:5])).sum(axis=1)
    assert q.model_id.endswith("/int8") and cos.min() > 0.9


def test_cuda_requested_without_gpu_is_a_clear_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="no CUDA device"):
        TextEncoder(device="cuda")


@pytest.mark.gpu
def test_cuda_half_precision_matches_cpu(encoder):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    g = TextEncoder(device="cuda")
    cos = (g.encode(TEXTS) * encoder.encode(TEXTS)).sum(axis=1)
    assert cos.min() > 0.999
