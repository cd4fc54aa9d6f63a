"""Silent frames are stored and searched as zero vectors: silence is no evidence that two sounds are alike.

YAMNet hears digital silence and a quiet room as one class of its own ("Silence"), all nearly the same vector, so
a query that was mostly silence matched whatever else was mostly silence, wherever it sat (a dog barking once in
5 s found sneezes). A zero vector casts no vote, is nobody's neighbour and adds nothing to a stretch's mean
embedding, so the search compares only the sounds (ESC-10 through the system: similar-moment timestamped P@10
0.933 -> 0.949; docs/quality.md). Landmarks are left alone: a quiet copy of a library recording is still found.
"""

from __future__ import annotations

import numpy as np

from echovids.errors import SilentAudio
from echovids.framing import frame_loudness_db


def mute_silence(vectors: np.ndarray, waveform: np.ndarray, hashes: np.ndarray, threshold_dbfs: float) -> np.ndarray:
    """``vectors`` (one per frame of ``waveform``) with the frames quieter than the threshold set to zero.

    Raises SilentAudio when nothing is left to search by: every frame that quiet and not one landmark hash.
    """
    return mute_quiet(vectors, frame_loudness_db(waveform), hashes, threshold_dbfs)


def mute_quiet(
    vectors: np.ndarray, loudness: np.ndarray, hashes: np.ndarray, threshold_dbfs: float, copy: bool = True
) -> np.ndarray:
    """:func:`mute_silence` from each frame's loudness (dB full scale), measured as the frames were made;
    without ``copy``, ``vectors`` itself is muted (a long clip's vectors are not held twice)."""
    silent = loudness < threshold_dbfs
    if silent.all() and hashes.size == 0:
        loudest = loudness.max(initial=-200.0)
        level = "it is digital silence" if loudest <= -150 else f"the loudest second is {loudest:.0f} dB"
        raise SilentAudio(
            f"The audio is silent: no second of it is louder than {threshold_dbfs:.0f} dB full scale ({level})."
        )
    muted = vectors.copy() if copy else vectors
    muted[silent] = 0
    return muted
