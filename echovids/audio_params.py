"""Audio constants shared by decoding, framing, the models and their front ends (as Google's vggish_params.py).

YAMNet and VGGish were trained on the same front end (16 kHz mono, 25 ms windows every 10 ms, 64 mel bands, 0.96 s
patches of 96 log-mel rows), and Echovids' frames, time base and VGGish packing all follow from it. Each value is
here once, with its reason; the modules that use them import them from here.
"""

from __future__ import annotations

SAMPLE_RATE = 16_000  # Hz: what both models were trained on; every input is decoded to it (echovids.audio)

# Log-mel front end (the models compute it inside their graphs; tests/melspec.py reproduces it in numpy).
STFT_WINDOW_SAMPLES = 400  # 25 ms: the models' analysis window
STFT_WINDOW_S = STFT_WINDOW_SAMPLES / SAMPLE_RATE
STFT_HOP_SAMPLES = 160  # 10 ms: one log-mel row per hop
STFT_HOP_S = STFT_HOP_SAMPLES / SAMPLE_RATE
FFT_LENGTH = 512  # the next power of two above the window
MEL_BANDS = 64  # the models' patch width
MEL_MIN_HZ = 125.0  # the mel filters' span, as both models were trained
MEL_MAX_HZ = 7500.0
YAMNET_LOG_OFFSET = 0.001  # log(mel + offset): YAMNet's offset ...
VGGISH_LOG_OFFSET = 0.01  # ... and VGGish's
PATCH_ROWS = 96  # log-mel rows per patch (0.96 s): the models' input
PATCH_SAMPLES = PATCH_ROWS * STFT_HOP_SAMPLES  # 15 360: the 0.96 s of audio a patch stands for

# Model frames (echovids.framing): the waveform one patch is computed from, every half patch.
FRAME_SAMPLES = (PATCH_ROWS - 1) * STFT_HOP_SAMPLES + STFT_WINDOW_SAMPLES  # 15 600 (0.975 s): 96 windows
FRAME_S = FRAME_SAMPLES / SAMPLE_RATE
PATCH_HOP_ROWS = PATCH_ROWS // 2  # 48: consecutive frames share half a patch, so a sound is never cut in two
FRAME_HOP_SAMPLES = PATCH_HOP_ROWS * STFT_HOP_SAMPLES  # 7 680 (0.48 s): the search's time base is index * hop
FRAME_HOP_S = FRAME_HOP_SAMPLES / SAMPLE_RATE
# A click, a shot or a beep is shorter than a frame: it is framed with zeros after it (a frame's padding, as at
# any recording's end), so the library takes sounds down to 0.1 s and a search takes 0.25 s, the shortest
# recording a person makes on purpose. Shorter still holds too little to name a sound by.
MIN_CLIP_SAMPLES = SAMPLE_RATE // 10
MIN_QUERY_SAMPLES = SAMPLE_RATE // 4

# VGGish (services/embedder/models/vggish.py; AudioSet's released features, echovids/audioset.py).
VGGISH_EXAMPLE_SAMPLES = PATCH_SAMPLES  # VGGish cuts its waveform into 0.96 s examples without overlap
VGGISH_EXAMPLE_TAIL_SAMPLES = FRAME_SAMPLES - VGGISH_EXAMPLE_SAMPLES  # 240: the last window's overhang
VGGISH_EMBEDDING_DIM = 128  # the network's output width, and AudioSet's feature width
# AudioSet's released features come one per example (0.96 s, two search hops) and are indexed at that hop: a
# library frame may stand for a whole number of query hops (services/search/shard.py, ``hop_ratio``).
VGGISH_FEATURE_HOP_S = VGGISH_EXAMPLE_SAMPLES / SAMPLE_RATE
QUANTIZE_MIN = -2.0  # AudioSet's postprocess clips the whitened PCA values to [-2, 2] and quantises to uint8
QUANTIZE_MAX = 2.0
