"""VGGish through tensorflow_hub, on a VGGish-shaped SavedModel built here (no VGGish weights offline)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from echovids.audio_params import FRAME_HOP_S, FRAME_HOP_SAMPLES, FRAME_SAMPLES, VGGISH_EXAMPLE_SAMPLES
from echovids.framing import frame_waveform
from echovids.schemas import EmbeddingSpace

pytest.importorskip("tensorflow_hub")

from echovids.vectors import dequantize
from services.embedder.models import vggish
from services.embedder.models.vggish import VggishHub, pack_frames
from tests.vggish_stub import save_stub, stub_reference

SR = 16_000
SCALE = 2.0**20  # ramp samples i / 2**20 are exact in float32 up to 16 s


@pytest.fixture(scope="module")
def handle(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(save_stub(tmp_path_factory.mktemp("vggish") / "stub"))


@pytest.fixture(scope="module")
def model(handle: str) -> VggishHub:
    return VggishHub(handle)


def ramp(seconds: float) -> np.ndarray:
    return (np.arange(int(seconds * SR)) / SCALE).astype(np.float32)


def noise(seconds: float, seed: int) -> np.ndarray:
    return (0.2 * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)


def test_loads_through_tensorflow_hub_and_records_its_space(model: VggishHub) -> None:
    assert model.space.model == "vggish"
    assert model.space.dim == 128
    assert model.space.version.startswith("local-")
    assert model.class_names == []
    yamnet = EmbeddingSpace(model="yamnet", version="tflite-1", dim=1024)
    assert model.space.key != yamnet.key


def test_space_version_of_a_hub_url_and_of_pca() -> None:
    assert vggish.space_version("https://tfhub.dev/google/vggish/1", None) == "hub-1"
    assert vggish.space_version("https://www.kaggle.com/models/google/vggish/TensorFlow2/vggish/1/", None) == "hub-1"


def test_each_row_is_its_frame_at_the_framing_hop(model: VggishHub) -> None:
    """Row i is the stub's output for exactly frame i's 0.975 s, which starts at i * FRAME_HOP_S."""
    waveform = ramp(10.0)
    frames = frame_waveform(waveform)
    calls = model.calls
    raw = model.raw_embeddings(frames)
    assert model.calls == calls + 1  # the whole file in one call
    assert raw.shape == (frames.shape[0], 128)
    for i in range(frames.shape[0] - 1):  # the last frame is zero-padded
        start = round(i * FRAME_HOP_S * SR)
        assert raw[i, 0] == pytest.approx(start / SCALE, abs=1e-9)
        assert raw[i, 1] == pytest.approx((start + FRAME_SAMPLES - 1) / SCALE, abs=1e-9)
    expected = np.stack([stub_reference(frame) for frame in frames])
    np.testing.assert_allclose(raw, expected, atol=2e-4, rtol=1e-4)


def test_packing_equals_one_call_per_frame(model: VggishHub) -> None:
    frames = frame_waveform(noise(6.0, seed=1))
    per_frame = np.stack([np.asarray(model._module(frame))[0] for frame in frames])
    np.testing.assert_allclose(model.raw_embeddings(frames), per_frame, atol=1e-4)


def test_pack_layout_by_hand() -> None:
    frames = frame_waveform(noise(3.0, seed=2))  # 5 frames, one contiguous run
    assert frames.shape[0] == 5
    packed, row_of = pack_frames(frames)
    # Even frames 0, 2, 4 in slots 0-2, a discarded slot 3, odd frames 1, 3 in slots 4-5, then the tail.
    assert row_of.tolist() == [0, 4, 1, 5, 2]
    assert packed.size == 6 * 15_360 + 240
    for i, slot in enumerate(row_of):
        np.testing.assert_array_equal(packed[slot * 15_360 : slot * 15_360 + FRAME_SAMPLES], frames[i])
    assert vggish.contiguous_runs(frames) == [(0, 5)]
    assert vggish.contiguous_runs(frames[[0, 1, 3, 4]]) == [(0, 2), (2, 4)]


def test_batch_of_several_jobs_in_any_order(model: VggishHub) -> None:
    """Frames of three files, interleaved, come back as each frame's own embedding, in one call."""
    jobs = [frame_waveform(noise(s, seed)) for s, seed in ((2.0, 3), (4.5, 4), (1.0, 5))]
    frames = np.concatenate(jobs)
    order = np.random.default_rng(0).permutation(frames.shape[0])
    expected = np.stack([stub_reference(frame) for frame in frames])
    calls = model.calls
    np.testing.assert_allclose(model.raw_embeddings(frames[order]), expected[order], atol=2e-4, rtol=1e-4)
    assert model.calls == calls + 1


def test_calls_are_capped_and_results_unchanged(handle: str) -> None:
    small = VggishHub(handle, max_frames_per_call=4)
    frames = frame_waveform(noise(5.0, seed=6))
    raw = small.raw_embeddings(frames)
    assert small.calls == -(-frames.shape[0] // 4)
    np.testing.assert_allclose(raw, np.stack([stub_reference(f) for f in frames]), atol=2e-4, rtol=1e-4)


def test_embed_normalises_and_handles_empty(model: VggishHub) -> None:
    frames = frame_waveform(noise(3.0, seed=7))
    embedded = model.embed(frames)
    assert embedded.scores is None
    np.testing.assert_allclose(np.linalg.norm(embedded.vectors, axis=1), 1.0, atol=1e-5)
    assert model.embed(np.zeros((0, FRAME_SAMPLES), np.float32)).vectors.shape == (0, 128)


def write_pca(path: Path, eigen: np.ndarray, means: np.ndarray) -> Path:
    np.savez(path, pca_eigen_vectors=eigen, pca_means=means)
    return path


def test_postprocess_arithmetic_by_hand(tmp_path: Path) -> None:
    """PCA (E @ (x - mean)), clip to [-2, 2], (x + 2) * 255 / 4, truncated to uint8: four values by hand."""
    params = vggish.PcaParams(write_pca(tmp_path / "pca.npz", 2.0 * np.eye(128), np.ones(128)))
    raw = np.zeros((1, 128))
    raw[0, :4] = [1.5, 0.0, 3.0, 1.1]
    # pca: 2 * (x - 1) = [1, -2, 4, 0.2]; clipped [1, -2, 2, 0.2]; * 63.75 after + 2: [191.25, 0, 255, 140.25]
    assert params.postprocess(raw)[0, :4].tolist() == [191, 0, 255, 140]
    assert params.postprocess(raw)[0, 4] == 0  # 2 * (0 - 1) = -2 -> 0
    assert dequantize(np.array([0, 255, 191], np.uint8)).tolist() == pytest.approx([-2.0, 2.0, 191 * 4 / 255 - 2])


def test_postprocess_matches_googles_formula(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    eigen, means = rng.standard_normal((128, 128)) / 10, rng.standard_normal(128)
    params = vggish.PcaParams(write_pca(tmp_path / "pca.npz", eigen, means))
    raw = rng.standard_normal((5, 128)).astype(np.float32)
    # vggish_postprocess.Postprocessor.postprocess, verbatim arithmetic:
    pca_applied = np.dot(eigen, (raw.T - means.reshape(-1, 1))).T
    expected = ((np.clip(pca_applied, -2.0, 2.0) + 2.0) * (255.0 / 4.0)).astype(np.uint8)
    np.testing.assert_array_equal(params.postprocess(raw), expected)


def test_embed_with_pca_is_a_different_space(handle: str, model: VggishHub, tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    pca_path = write_pca(tmp_path / "pca.npz", rng.standard_normal((128, 128)) / 10, rng.standard_normal(128))
    whitened = VggishHub(handle, pca_params=pca_path)
    assert "+pca8-" in whitened.space.version and whitened.space.key != model.space.key
    frames = frame_waveform(noise(2.0, seed=10))
    quantized = whitened.postprocess(whitened.raw_embeddings(frames))
    expected = dequantize(quantized)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(whitened.embed(frames).vectors, expected, atol=1e-6)
    with pytest.raises(ValueError, match="PCA"):
        model.postprocess(np.zeros((1, 128)))


def test_bad_pca_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pca_eigen_vectors"):
        vggish.PcaParams(write_pca(tmp_path / "bad.npz", np.eye(64), np.zeros(64)))


def test_settings_select_vggish(handle: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from echovids.settings import Settings
    from services.embedder.factory import build_model

    monkeypatch.setenv("ECHOVIDS_EMBEDDER", "vggish")
    monkeypatch.setenv("ECHOVIDS_VGGISH_HANDLE", handle)
    built = build_model(Settings())
    assert isinstance(built, VggishHub) and built.space.dim == 128
    assert FRAME_HOP_SAMPLES * 2 == VGGISH_EXAMPLE_SAMPLES
