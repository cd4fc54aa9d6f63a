"""One shard of the index: durable per-clip segments, a ScaNN snapshot over sealed rows, an exact delta.

On disk, under ``<data dir>/shards/<i>/``:
- ``segments/<clip>.npz``: a clip's frame vectors (float16), landmarks, per-frame labels and class scores and
  embedding space; written once, with a sha256 of its columns inside (a file that no longer matches it is damaged).
- ``class_segments/<clip>.npz``: the AudioSet class scores of a clip indexed before segments carried them
  (written once by `echovids reindex-classes`; a newer segment holds them itself).
- ``tombstones/<clip>``: the clip is deleted; filtered at query time, purged by the next compaction.
- ``snapshots/v<N>/``: a ScaNN index (``serialize()``) over the clips its ``manifest.json`` lists, in row
  order, and those clips' arrays as ``.npy`` files (SNAPSHOT_ARRAYS): their frames (int8 codes), their landmark and
  class postings (sorted, numbered by the snapshot's clip positions and rows) and their own columns (labels,
  class scores). Every search process memory-maps them: one copy in the page cache however many processes
  read it, no postings to sort, and a start that reads no segment of a sealed clip. The manifest holds the
  sha256 of each file; a snapshot counts only once its ``COMPLETE`` marker exists, so a half-written one is
  never loaded.
- ``quarantine/``: damaged files set aside (never read again, kept for a look): a bad snapshot is replaced by
  searching its clips' segments until the next compaction; a bad segment's clip is listed in
  ``ShardIndex.quarantined`` for the search service to re-embed or mark failed.
New clips form the delta, searched exactly, until a compaction folds them into the next snapshot: its postings
are the last snapshot's and the delta's, renumbered. The delta's landmark and class postings
(services/search/class_index.py) are built in memory from its segments, and follow every layout (new clips
appended, a snapshot swapped in, tombstoned clips masked).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import mmap
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from echovids.audio_params import FRAME_HOP_S
from echovids.errors import SpaceMismatch
from echovids.vectors import Projection, int8_rows
from services.search.class_index import ClassPostings, SortedClassPostings, match_classes
from services.search.landmark_index import (
    HashDirectory,
    LandmarkMatch,
    LandmarkPostings,
    PackedPostings,
    Postings,
    SortedPostings,
    match_postings,
    steady_clips,
)
from services.search.matching import EachClip, Frames, Int8Frames, Stored, Upsampled

log = logging.getLogger(__name__)


def scann_pybind():  # type: ignore[no-untyped-def]
    """ScaNN's pybind module, without TensorFlow.

    ``import scann`` also imports ScaNN's TensorFlow ops when TensorFlow is installed (as in the one shared
    development venv): 3 s and several hundred MB in every search process, for ops the search never calls. A
    ``None`` in ``sys.modules`` makes that import fail the way it does in the search image, which has no TensorFlow.
    """
    if "scann" not in sys.modules and "tensorflow" not in sys.modules:
        sys.modules["tensorflow"] = None  # type: ignore[assignment]
        try:
            import scann  # noqa: F401
        finally:
            del sys.modules["tensorflow"]
    from scann import scann_ops_pybind

    return scann_ops_pybind


SCANN_BRUTE_FORCE_BELOW = 20_000


def scann_parameters(
    n: int, dim: int, neighbours: int, leaves: int = 0, leaves_to_search: int = 0, reorder: int = 0
) -> dict:
    """ScaNN tree + AH parameters for ``n`` unit vectors; a 0 argument means "chosen from the size".

    Tuned with `echovids bench search` (docs/benchmarks.md, "Search (ANN)"): a sqrt(n)-leaf tree trained on up
    to 250k rows (a 50k sample made the partitions markedly worse: recall@10 0.94 instead of 0.97 at the same
    leaves searched), searching 1/80 of the leaves (recall@10 0.96 at 1M x 1024; the old 1/10 bought 0.998 at
    ~4x the cost), AH with 2 dims per 4-bit block (4 dims lost ~0.05 recall even with 300 reordered; with 2, 100
    or 200 reordered gave the same recall: the leaves searched limit it) and exact re-scoring of the candidates
    (ScaNN's int8 reordering lost 0.02). The tree is spherical k-means (unit centroids): frames are unit vectors
    scored by dot product, and plain means left up to 2.5 % of a shard's frames in leaves no query reached, not
    even the frame itself (docs/benchmarks.md, "ScaNN's tree": what it gains and costs in recall and speed).
    """
    leaves = leaves or max(16, int(np.sqrt(n)))
    return {
        "leaves": leaves,
        "lts": min(leaves, leaves_to_search or max(8, leaves // 80)),
        "dpb": 2,
        "thr": float("nan"),  # no anisotropic AH: it slowed the build and did not change recall (limited by lts)
        "reorder": reorder or max(100, neighbours * 4),
        "sample": min(n, 250_000),
        "spherical": True,
    }


def scann_searcher(
    data: np.ndarray,
    neighbours: int,
    *,
    leaves: int | None = None,
    leaves_to_search: int | None = None,
    reorder: int | None = None,
) -> tuple[Any, int]:
    """A ScaNN searcher sized to the data, and how many candidates per query frame to re-score exactly.

    Small shards are searched exactly (0 to re-score). Large ones are partitioned and quantised and keep no
    vectors of their own: ScaNN's float32 reordering copy was 4 KB a frame in every search process, two thirds
    of a shard's memory. The shard re-scores ScaNN's candidates from its frames' int8 codes instead, one copy
    mapped from the snapshot and shared by every process (docs/benchmarks.md, "Scale").
    ``leaves``/``leaves_to_search``/``reorder`` default to the settings ``ECHOVIDS_SEARCH_SCANN_*`` (0 = auto).
    """
    builder = scann_pybind().builder(data, neighbours, "dot_product")
    n = data.shape[0]
    if n < SCANN_BRUTE_FORCE_BELOW:
        return builder.score_brute_force().build(), 0
    from echovids.settings import get_settings

    settings = get_settings()
    p = scann_parameters(
        n,
        data.shape[1],
        neighbours,
        leaves=settings.search_scann_leaves if leaves is None else leaves,
        leaves_to_search=settings.search_scann_leaves_to_search if leaves_to_search is None else leaves_to_search,
        reorder=settings.search_scann_reorder if reorder is None else reorder,
    )
    searcher = (
        builder.tree(
            num_leaves=p["leaves"],
            num_leaves_to_search=p["lts"],
            training_sample_size=p["sample"],
            spherical=p["spherical"],
        )
        .score_ah(p["dpb"], anisotropic_quantization_threshold=p["thr"])
        .build()
    )
    return searcher, int(p["reorder"])


SNAPSHOT_MARKER = "COMPLETE"
# A snapshot's arrays, each ``<name>.npy`` in its folder, memory-mapped by every search process; row and clip
# positions are the snapshot's (its manifest's clip order).
SNAPSHOT_ARRAYS = (
    # The clips' frames as int8 codes and a scale a row (echovids.vectors.int8_rows): what ScaNN's candidates are
    # re-scored from and a match compares, at half float16's bytes; numpy also casts int8 ten times faster.
    "codes",  # [rows, dim] int8
    "code_scales",  # [rows] float32: row i is codes[i] * code_scales[i]
    "vectors",  # [rows, dim] float16: the frames, in a snapshot written before the codes
    "frame_total",  # [dim + 1] float64: the sum of every row, then how many are audible (the centre's parts)
    # The frames' projection (echovids.vectors.Projection): every row above, the centre and a query's frames
    # are in its space. Absent: the frames are kept at their own dimension.
    "projection_axes",  # [frame dim, axes] float32
    *(f"landmark_{name}" for name in PackedPostings._fields),  # a hash directory and the postings in its order
    *(f"landmark_{name}" for name in SortedPostings._fields),  # when clip and time need more than 32 bits
    *(f"class_index_{name}" for name in SortedClassPostings._fields),  # sorted by class
    # The clips' own columns (ClipData), so a process starts from the snapshot without reading its segments:
    "frame_labels",  # [rows, 3] int16, zeros for a clip without labels
    "class_ids",  # [rows, top] uint16 and uint8, zeros for a clip without class scores
    "class_levels",
    "label_names",  # every clip's vocabulary, one after another: clip p's is [label_offsets[p], [p + 1])
    "label_offsets",
    "clip_flags",  # per clip: LABELLED | SCORED
    "clip_hops",  # per clip: query hops per stored frame (hop_ratio)
)
# Arrays a snapshot lacks: one written before them (clip_hops, the codes, the frame total, the projection, packed
# postings, the hash directory; Sealed.clips reads each clip at one hop, its float16 frames), or after the float16
# frames gave way to the codes; its landmark postings are either packed (keys, starts, hops, shift; before the
# directory: hashes, hops, shift) or kept apart (hashes, clips, times).
OPTIONAL_SNAPSHOT_ARRAYS = (
    "clip_hops",
    "codes",
    "code_scales",
    "frame_total",
    "projection_axes",
    "vectors",
    *(f"landmark_{name}" for name in {*PackedPostings._fields, *SortedPostings._fields}),
)
# A shard's projection is fitted on up to this many of its frames (chosen at random), and fitted again each time
# the shard has doubled, until it was fitted on a shard of this many: a library's first clips need not be its
# typical ones, and a fit reads every clip's segment again.
PROJECTION_SAMPLE_ROWS = 100_000
LABELLED, SCORED = 1, 2
LABEL_COLUMNS = ("frame_labels", "label_names")
CLASS_COLUMNS = ("class_ids", "class_levels")
SEGMENT_COLUMNS = ("space", "vectors", "hashes", "times")
HOP_COLUMN = "hop_s"  # seconds between the stored frames; a segment written before it has frames every FRAME_HOP_S


def hop_ratio(hop_s: float) -> int:
    """Query hops per stored frame: a library's frames come every whole number of the search's hops."""
    ratio = round(hop_s / FRAME_HOP_S)
    if ratio < 1 or abs(ratio * FRAME_HOP_S - hop_s) > 1e-6:
        raise ValueError(f"frames every {hop_s} s: not a whole multiple of the search's {FRAME_HOP_S} s hop")
    return ratio


def _write_npz(path: Path, columns: dict[str, np.ndarray]) -> None:
    """Temp file then rename, so no reader sees half of one."""
    buffer = io.BytesIO()
    np.savez(buffer, **columns)  # type: ignore[arg-type]  # numpy's stub types **kwds too narrowly
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, path)


def _attach_classes(clip: ClipData, path: Path, quarantine: Path) -> bool:
    """Fill a clip's class scores (and labels, if it had none) from its class segment, when there is one.

    A damaged one is set aside into ``quarantine``: the clip is searched without class scores until the next
    `echovids reindex-classes` writes them again.
    """
    try:
        columns = _checked_columns(path, CLASS_COLUMNS)
        if columns is not None and columns["class_ids"].shape[0] != clip.vectors.shape[0]:
            raise DamagedFile("its frame count differs from the segment's")
    except DamagedFile as exc:
        log.error("damaged class segment %s set aside (%s)", path, exc)
        _move_aside(path, quarantine / f"classes-{path.name}.{os.getpid()}.bad")
        return False
    if columns is None:
        return False
    clip.class_ids, clip.class_levels = columns["class_ids"], columns["class_levels"]
    if clip.frame_labels is None and all(name in columns for name in LABEL_COLUMNS):
        clip.frame_labels, clip.label_names = columns["frame_labels"], columns["label_names"]
    return True


CHECKSUM_COLUMN = "sha256"


class DamagedFile(ValueError):
    """A segment or snapshot whose bytes no longer match the checksum written with it."""


def columns_digest(columns: dict[str, np.ndarray]) -> str:
    """sha256 over a segment's columns (name, dtype, shape and bytes, in name order)."""
    digest = hashlib.sha256()
    for name in sorted(columns):
        array = np.ascontiguousarray(columns[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def folder_digests(folder: Path, digest: Callable[[Path], str]) -> dict[str, str]:
    """sha256 (by ``digest``: a snapshot's Digests) of every file under ``folder``, by path relative to it."""
    return {str(p.relative_to(folder)): digest(p) for p in sorted(folder.rglob("*")) if p.is_file()}


# A folder's names are trusted unchanged while its mtime is the one seen before they were last listed, but only a
# mtime this much older than that look: a file added in the same clock tick as the mtime (and after the listing)
# would leave it as it was. A second is many ticks, and room for a shared store's clock.
SETTLED_S = 1.0

STAMPS = "verified.json"  # in a snapshot's folder: each file's sha256 and its stat when it was taken


class Digests:
    """A snapshot's files' sha256, hashed once: a file whose size, times and inode are what they were when it was
    last hashed gives the digest it gave then (git's index skips unchanged files the same way), so a start does
    not read gigabytes to check them. A file written again (damaged, replaced) is hashed again; a bit flipped
    under unchanged times is not caught at a start."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        try:
            self.stamps: dict[str, list] = json.loads((folder / STAMPS).read_text())
        except (OSError, ValueError):
            self.stamps = {}
        self.changed = False

    def __call__(self, path: Path) -> str:
        name, seen = str(path.relative_to(self.folder)), _stat(path)
        stamp = self.stamps.get(name)
        if stamp is not None and stamp[0] == seen:
            return str(stamp[1])
        digest = file_digest(path)
        self.stamps[name] = [seen, digest]
        self.changed = True
        return digest

    def save(self) -> None:
        """Keep the stamps for the next start (a read-only store keeps none: each start hashes again)."""
        if not self.changed:
            return
        tmp = self.folder / f"{STAMPS}.{os.getpid()}.tmp"
        with contextlib.suppress(OSError):
            tmp.write_text(json.dumps(self.stamps))
            os.replace(tmp, self.folder / STAMPS)


def _stat(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _checked_columns(path: Path, required: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    """A segment file's columns, its checksum verified; None when there is no such file. DamagedFile (and why)
    when it cannot be trusted: unreadable, not what its checksum says, or without a ``required`` column."""
    try:
        with np.load(path) as data:
            columns = {name: data[name] for name in data.files}
    except FileNotFoundError:
        return None
    except Exception as exc:  # a damaged zip raises anything from BadZipFile to EOFError
        raise DamagedFile(f"unreadable: {exc}") from exc
    stored = columns.pop(CHECKSUM_COLUMN, None)
    # Files written before checksums were kept have none; they are read as they are.
    if stored is not None and str(stored) != columns_digest(columns):
        raise DamagedFile("its checksum does not match its contents")
    if not all(name in columns for name in required):
        raise DamagedFile("columns missing")
    return columns


def _move_aside(path: Path, to: Path) -> None:
    with contextlib.suppress(FileNotFoundError):  # another replica set it aside first
        os.replace(path, to)


def _frame_sum(vectors: Stored) -> tuple[np.ndarray, int]:
    """(sum of a clip's frame vectors in float64, how many are audible: not muted to zero)."""
    frames = vectors[:]
    return frames.sum(axis=0, dtype=np.float64), int(np.count_nonzero(frames.any(axis=1)))


def settled_mtime(folder: Path) -> int | None:
    """The folder's mtime (ns) when it is settled (SETTLED_S), else None: its listing cannot be trusted later."""
    mtime = folder.stat().st_mtime_ns
    return mtime if time.time_ns() - mtime > SETTLED_S * 1e9 else None


def _mapped(path: Path) -> np.ndarray:
    """A snapshot's array, memory-mapped read-only and advised random: a query reads scattered rows and posting
    lists, and the kernel's readahead around each fault of a cold file read (and mapped) ~12x the pages the query
    used (docs/benchmarks.md, "One copy of a shard for the pool")."""
    array = np.load(path, mmap_mode="r")
    array._mmap.madvise(mmap.MADV_RANDOM)  # numpy's memmap keeps its mmap object there
    return array.view(np.ndarray)


@dataclass
class Sealed:
    """A snapshot's ScaNN searcher over rows [0, sealed), and what re-scores its candidates."""

    searcher: Any  # scann_ops_pybind's searcher (no type information)
    rescore: int  # candidates per query frame re-scored from ``vectors``; 0: the searcher's scores are final
    # SNAPSHOT_ARRAYS by name, memory-mapped (None in a snapshot written before they were kept there).
    columns: dict[str, np.ndarray] | None = None
    projection_rows: int = 0  # the shard's rows when its projection was fitted (on up to PROJECTION_SAMPLE_ROWS)
    # The segments folder's settled mtime when the compaction listed it (None: unknown): while the folder still has
    # it, every segment there is the snapshot's, and a start need not list them.
    segments_mtime_ns: int | None = None
    space: str | None = None  # the embedding space of its frames (None: a snapshot written before it was kept)

    def __post_init__(self) -> None:
        # The shard searches a query's frames in one call (search_batched), on the calling thread: ScaNN's querying
        # pool would be an idle thread a searcher, and a process forked with it could never free the searcher (its
        # pool would wait for a thread the fork did not copy). The search worker forks its pool after loading.
        self.searcher.set_num_threads(0)

    @property
    def projection(self) -> Projection | None:
        """What the frames were projected by (None: they are kept at their own dimension)."""
        if self.columns is None or "projection_axes" not in self.columns:
            return None
        return Projection(self.columns["projection_axes"])

    @property
    def frames(self) -> Stored | None:
        """[sealed, dim]: the codes (float16 frames in a snapshot written before them)."""
        if self.columns is None:
            return None
        if "codes" in self.columns:
            return Int8Frames(self.columns["codes"], self.columns["code_scales"])
        return self.columns["vectors"]

    @property
    def frame_total(self) -> tuple[np.ndarray, int] | None:
        """(sum of every sealed row, audible rows among them); None in a snapshot written before it was kept."""
        if self.columns is None or "frame_total" not in self.columns:
            return None
        total = self.columns["frame_total"]
        return np.array(total[:-1]), int(total[-1])

    @property
    def landmarks(self) -> SortedPostings | PackedPostings | None:
        """The sealed clips' landmark postings."""
        if self.columns is None:
            return None
        column = self.columns
        if "landmark_keys" in column:
            return PackedPostings(*(column[f"landmark_{name}"] for name in PackedPostings._fields))
        if "landmark_hops" in column:  # packed before the directory: made here, from their hashes
            directory = HashDirectory.of(column["landmark_hashes"])
            return PackedPostings(*directory, column["landmark_hops"], column["landmark_shift"])
        return SortedPostings(*(column[f"landmark_{name}"] for name in SortedPostings._fields))

    @property
    def classes(self) -> SortedClassPostings | None:
        """The sealed clips' class postings."""
        if self.columns is None:
            return None
        return SortedClassPostings(*(self.columns[f"class_index_{name}"] for name in SortedClassPostings._fields))

    def clips(self, frames: list[int]) -> SealedClips:
        """The sealed clips (their frame counts ``frames``, in row order), each made from the mapped columns when
        asked for."""
        assert self.columns is not None
        return SealedClips(self.columns, np.asarray(frames, dtype=np.int64))

    def map_arrays(self, path: Path) -> None:
        """Map the snapshot's arrays (SNAPSHOT_ARRAYS) from its folder, read-only."""
        self.columns = {
            name: _mapped(path / f"{name}.npy")
            for name in SNAPSHOT_ARRAYS
            if name not in OPTIONAL_SNAPSHOT_ARRAYS or (path / f"{name}.npy").exists()
        }

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest sealed rows of each query frame and their dot products; -1 (score 0) pads."""
        mapped = self.frames if self.rescore else None
        rows, sims = self.searcher.search_batched(
            queries, final_num_neighbors=k if mapped is None else max(k, self.rescore)
        )
        return rescored(mapped, queries, rows, sims, k)


class SealedClips:
    """A snapshot's clips by position, each a ClipData of views of the mapped columns made when asked for: a
    shard holds no object per sealed clip (50 000 of them, a million frames, took ~80 MB in every search process
    and a second of each start)."""

    def __init__(self, columns: dict[str, np.ndarray], frames: np.ndarray) -> None:
        self.columns = columns
        self.frames = frames  # per clip
        self.starts = np.cumsum(frames) - frames  # each clip's first row
        self.hops = columns["clip_hops"].astype(np.int64) if "clip_hops" in columns else np.ones(frames.size, np.int64)
        # Every row, for reads across clips (``block``): the codes, or float16 frames in an older snapshot.
        self.rows: Stored = (
            Int8Frames(columns["codes"], columns["code_scales"]) if "codes" in columns else columns["vectors"]
        )

    def __len__(self) -> int:
        return int(self.frames.size)

    def label_names(self, position: int) -> np.ndarray | None:
        c = self.columns
        if not int(c["clip_flags"][position]) & LABELLED:
            return None
        return c["label_names"][c["label_offsets"][position] : c["label_offsets"][position + 1]]

    def stored(self, position: int) -> tuple[Stored, int]:
        """A clip's frames and their hop ratio, without the rest of its columns (a query re-scores 100 clips)."""
        c = self.columns
        start = int(self.starts[position])
        rows = slice(start, start + int(self.frames[position]))
        frames = Int8Frames(c["codes"][rows], c["code_scales"][rows]) if "codes" in c else c["vectors"][rows]
        return frames, int(self.hops[position])

    def lengths(self, positions: np.ndarray) -> np.ndarray:
        """Clips' frames at the query's hop."""
        return self.frames[positions] * self.hops[positions]

    def block(self, positions: np.ndarray, first: np.ndarray, rows: int) -> np.ndarray:
        """ClipReader.block for these clips, in a few gathers over the mapped frames (a clip stored at a coarser
        hop read as Upsampled reads it: a position between two stored frames is their mix, normalised)."""
        hops = self.hops[positions][:, None]
        count = self.frames[positions][:, None]
        at = first[:, None] + np.arange(rows)  # query hops
        inside = (at >= 0) & (at < count * hops)
        stored, between = np.divmod(np.where(inside, at, 0), hops)
        start = self.starts[positions][:, None]
        block = self._decoded(start + stored)
        mixed = between > 0
        if mixed.any():
            later = self._decoded((start + np.minimum(stored + 1, count - 1))[mixed])
            k = between[mixed][:, None].astype(np.float32)
            mix = (np.broadcast_to(hops, between.shape)[mixed][:, None] - k) * block[mixed] + k * later
            norms = np.sqrt(np.einsum("ij,ij->i", mix, mix))[:, None]
            block[mixed] = mix / np.maximum(norms, 1e-12)
        if not inside.all():
            block[~inside] = 0.0
        return block

    def _decoded(self, rows: np.ndarray) -> np.ndarray:
        return self.rows[rows].astype(np.float32, copy=False)

    def __getitem__(self, position: int) -> ClipData:
        c = self.columns
        start = int(self.starts[position])
        rows = slice(start, start + int(self.frames[position]))
        flags = int(c["clip_flags"][position])
        return ClipData(
            self.stored(position)[0],
            *NO_LANDMARKS,  # searched from the snapshot's postings
            c["frame_labels"][rows] if flags & LABELLED else None,
            self.label_names(position),
            c["class_ids"][rows] if flags & SCORED else None,
            c["class_levels"][rows] if flags & SCORED else None,
            int(self.hops[position]),
        )


class ClipTable:
    """A layout's clips by position: its snapshot's (SealedClips), then those placed one by one. A view keeps the
    table of its layout, which is only ever appended to (a new layout makes a new table)."""

    def __init__(self, sealed: SealedClips | None = None) -> None:
        self.sealed = sealed
        self._sealed_count = 0 if sealed is None else len(sealed)
        self._placed: list[ClipData] = []
        self._kept: dict[int, ClipData] = {}  # snapshot clips given class scores since (echovids reindex-classes)

    def __len__(self) -> int:
        return self._sealed_count + len(self._placed)

    def __getitem__(self, position: int | np.integer) -> ClipData:
        position = int(position)
        if position >= self._sealed_count:
            return self._placed[position - self._sealed_count]
        kept = self._kept.get(position)
        assert self.sealed is not None
        return kept if kept is not None else self.sealed[position]

    def __iter__(self) -> Iterator[ClipData]:
        return (self[p] for p in range(len(self)))

    def stored(self, position: int | np.integer) -> tuple[Stored, int]:
        """``self[position]``'s frames and hop ratio, without making the clip."""
        position = int(position)
        if position < self._sealed_count and position not in self._kept:
            assert self.sealed is not None
            return self.sealed.stored(position)
        data = self[position]
        return data.vectors, data.hop

    def frames(self, position: int | np.integer) -> Frames:
        """A clip's frame vectors at the query's hop (float16 or int8 codes; callers convert just the frames they
        read)."""
        frames, hop = self.stored(position)
        return frames if hop == 1 else Upsampled(frames, hop)

    def _in_sealed(self, positions: np.ndarray) -> np.ndarray:
        """Which positions the snapshot's columns hold as they are (not placed since, nor kept in memory)."""
        inside = positions < self._sealed_count
        return inside & ~np.isin(positions, list(self._kept)) if self._kept else inside

    def lengths(self, positions: np.ndarray) -> np.ndarray:
        """ClipReader.lengths: the snapshot's clips from its columns at once, the others one by one."""
        sealed = self._in_sealed(positions)
        out = np.empty(positions.size, dtype=np.int64)
        if sealed.any():
            assert self.sealed is not None
            out[sealed] = self.sealed.lengths(positions[sealed])
        out[~sealed] = EachClip(self.frames).lengths(positions[~sealed])
        return out

    def block(self, positions: np.ndarray, first: np.ndarray, rows: int) -> np.ndarray:
        """ClipReader.block: the snapshot's clips gathered at once, the others one by one."""
        sealed = self._in_sealed(positions)
        each = EachClip(self.frames)
        if not sealed.any():
            return each.block(positions, first, rows)
        assert self.sealed is not None
        gathered = self.sealed.block(positions[sealed], first[sealed], rows)
        if sealed.all():
            return gathered
        block = np.zeros((positions.size, rows, gathered.shape[2]), dtype=np.float32)
        block[sealed] = gathered
        block[~sealed] = each.block(positions[~sealed], first[~sealed], rows)
        return block

    def label_names(self, position: int | np.integer) -> np.ndarray | None:
        """``self[position].label_names``, without making the clip."""
        position = int(position)
        if position < self._sealed_count and position not in self._kept:
            assert self.sealed is not None
            return self.sealed.label_names(position)
        return self[position].label_names

    def append(self, data: ClipData) -> None:
        self._placed.append(data)

    def keep(self, position: int, data: ClipData) -> None:
        """A snapshot clip changed in memory (its class scores attached): it is this object from now on."""
        if position < self._sealed_count:
            self._kept[position] = data


def rescored(
    stored: Stored | None, queries: np.ndarray, rows: np.ndarray, sims: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """ScaNN's candidate ``rows`` of each query frame, re-scored from the ``stored`` frames (when given: int8
    codes, or float16 frames) and cut to the best ``k``; -1 (score 0) where ScaNN found fewer (it pads with row 0
    and a NaN score)."""
    found = ~np.isnan(sims)
    padded = not found.all()  # rare (a shard of fewer rows than asked for): the common case skips the masking
    rows = rows.astype(np.int64)  # ScaNN's are uint32
    if padded:
        rows[~found] = -1
    if stored is None:
        return rows, np.where(found, sims, 0.0).astype(np.float32)
    gathered = np.maximum(rows, 0).ravel() if padded else rows.ravel()
    if isinstance(stored, Int8Frames):
        picked, scales = stored.codes[gathered], stored.scales[gathered]
    else:
        picked, scales = stored[gathered], None
    # A float32 product of gathered frames (numpy has no BLAS for float16 or int8), scaled once for the codes.
    candidates = picked.astype(np.float32).reshape(*rows.shape, -1)
    exact = np.matmul(candidates, queries.astype(np.float32, copy=False)[:, :, None])[..., 0]
    if scales is not None:
        exact *= scales.reshape(rows.shape)
    if padded:
        exact[~found] = -np.inf
    if k < rows.shape[1]:
        top = np.argpartition(exact, -k, axis=1)[:, -k:]
        rows, exact = np.take_along_axis(rows, top, axis=1), np.take_along_axis(exact, top, axis=1)
    if padded:
        exact[rows < 0] = 0.0
    return rows, exact


def read_snapshot(path: Path) -> tuple[list[tuple[str, int]], Sealed]:
    """A snapshot's clips in row order with their frame counts, and its searcher, its files checked against its
    manifest's checksums.

    DamagedFile (or any error of a broken file) when it cannot be trusted.
    """
    manifest = json.loads((path / "manifest.json").read_text())
    files = manifest.get("files")
    digests = Digests(path)
    # Snapshots written before checksums were kept have none; they are loaded as they are.
    if files is not None and folder_digests(path / "scann", digests) != files:
        raise DamagedFile("its files do not match the checksums in its manifest")
    searcher = scann_pybind().load_searcher(str(path / "scann"))
    sealed = Sealed(
        searcher,
        int(manifest.get("rescore", 0)),
        projection_rows=int(manifest.get("projection_rows", 0)),
        segments_mtime_ns=manifest.get("segments_mtime_ns"),
        space=manifest.get("space"),
    )
    # Snapshots written before the arrays were kept have none: ScaNN reorders itself, the postings are built.
    if "arrays" in manifest:
        for name in SNAPSHOT_ARRAYS:
            if name in OPTIONAL_SNAPSHOT_ARRAYS and name not in manifest["arrays"]:
                continue
            if digests(path / f"{name}.npy") != manifest["arrays"][name]:
                raise DamagedFile(f"its {name}.npy does not match the checksum in its manifest")
        sealed.map_arrays(path)
        frames = sealed.frames
        if frames is None or frames.shape[0] != manifest["rows"]:
            raise ValueError("its frames hold another number of rows than the manifest")
    if sum(n for _, n in manifest["clips"]) != manifest["rows"]:
        raise ValueError("manifest rows do not add up")
    digests.save()
    return [(clip, int(n)) for clip, n in manifest["clips"]], sealed


@dataclass
class ClipData:
    vectors: Stored  # [frames, dim] unit length: float16 from a segment, int8 codes from a snapshot
    hashes: np.ndarray
    times: np.ndarray
    frame_labels: np.ndarray | None = None  # [frames, 3] best classes per frame, indices into label_names
    label_names: np.ndarray | None = None  # the clip's own vocabulary of class names (no pickling needed)
    # Each frame's top AudioSet classes (echovids/class_scores.py): what search by description reads.
    class_ids: np.ndarray | None = None  # [frames, top] uint16 model class indices
    class_levels: np.ndarray | None = None  # [frames, top] uint8 scores times SCORE_SCALE
    hop: int = 1  # query hops per stored frame (hop_ratio): 2 for AudioSet's features at their own 0.96 s

    @property
    def has_classes(self) -> bool:
        return self.class_ids is not None and self.class_levels is not None

    def labels_at(self, start: int, frames: int, count: int = 3) -> list[str]:
        """The classes heard most over frames [start, start + frames): each frame's best counts 3, then 2, 1."""
        if self.frame_labels is None or self.label_names is None:
            return []
        window = self.frame_labels[max(0, start) : max(0, start + frames)]
        if window.size == 0:
            return []
        weights = np.broadcast_to(np.array([3, 2, 1][: window.shape[1]]), window.shape)
        votes = np.bincount(window.ravel(), weights=weights.ravel(), minlength=self.label_names.size)
        return [str(self.label_names[i]) for i in np.argsort(-votes, kind="stable")[:count] if votes[i] > 0]


NO_LANDMARKS = (np.zeros(0, np.uint32), np.zeros(0, np.int32))


def _renumbered_postings(
    postings: Postings,
    class_postings: tuple[SortedClassPostings, ...],
    keep: np.ndarray,
    clip_offsets: np.ndarray,
    row_clip: np.ndarray,
    row_frame: np.ndarray,
) -> dict[str, np.ndarray]:
    """A layout's landmark and class postings of the clips it ``keep``s, numbered as a snapshot of those clips (in
    the layout's order) numbers its clips and rows, and sorted: the snapshot's postings arrays (SNAPSHOT_ARRAYS).
    ``clip_offsets``, ``row_clip`` and ``row_frame`` are the layout's (ShardView)."""
    keep = keep[: len(clip_offsets) - 1]
    position = np.where(keep, np.cumsum(keep) - 1, -1)
    frames = np.where(keep, np.diff(clip_offsets), 0)
    first_row = np.cumsum(frames) - frames
    decoded = [(part.posting_hashes(), *part.at(slice(None))) for part in postings]
    hashes, clips, times = (np.concatenate(column) for column in zip(*decoded, strict=True))
    del decoded
    kept = keep[clips]
    order = np.argsort(hashes[kept], kind="stable")
    classes, rows, levels = (np.concatenate(column) for column in zip(*class_postings, strict=True))
    owner = row_clip[rows]
    kept_rows = keep[owner]
    class_order = np.argsort(classes[kept_rows], kind="stable")
    sealed = (hashes[kept][order], position[clips[kept]][order].astype(np.int32), times[kept][order])
    landmarks = PackedPostings.pack(*sealed, count=int(keep.sum())) or SortedPostings(*sealed)
    return {
        **{f"landmark_{name}": column for name, column in zip(landmarks._fields, landmarks, strict=True)},
        "class_index_classes": classes[kept_rows][class_order],
        "class_index_rows": (first_row[owner] + row_frame[rows])[kept_rows][class_order].astype(np.int32),
        "class_index_levels": levels[kept_rows][class_order],
    }


def _clip_columns(clips: list[ClipData]) -> dict[str, np.ndarray]:
    """The clips' own columns, one after another (SNAPSHOT_ARRAYS): what Sealed.clips reads back."""
    rows = sum(c.vectors.shape[0] for c in clips)
    top = max((c.class_ids.shape[1] for c in clips if c.class_ids is not None), default=0)
    labels = np.zeros((rows, 3), np.int16)
    class_ids, class_levels = np.zeros((rows, top), np.uint16), np.zeros((rows, top), np.uint8)
    flags = np.zeros(len(clips), np.uint8)
    hops = np.array([clip.hop for clip in clips], np.uint8)
    names: list[np.ndarray] = []
    row = 0
    for position, clip in enumerate(clips):
        n = clip.vectors.shape[0]
        if clip.frame_labels is not None and clip.label_names is not None:
            labels[row : row + n, : clip.frame_labels.shape[1]] = clip.frame_labels
            names.append(clip.label_names.astype(str))
            flags[position] |= LABELLED
        else:
            names.append(np.zeros(0, dtype=str))
        if clip.class_ids is not None and clip.class_levels is not None:
            # A clip kept with fewer top classes is padded with level 0: no posting, no score.
            class_ids[row : row + n, : clip.class_ids.shape[1]] = clip.class_ids
            class_levels[row : row + n, : clip.class_levels.shape[1]] = clip.class_levels
            flags[position] |= SCORED
        row += n
    return {
        "frame_labels": labels,
        "class_ids": class_ids,
        "class_levels": class_levels,
        "label_names": np.concatenate(names) if names else np.zeros(0, dtype=str),
        "label_offsets": np.concatenate([[0], np.cumsum([a.size for a in names])]).astype(np.int64),
        "clip_flags": flags,
        "clip_hops": hops,
    }


class ShardIndex:
    """A shard in memory. Replicas (processes) converge by re-reading segments, tombstones and snapshots."""

    def __init__(self, root: Path, shard: int) -> None:
        self.dir = root / "shards" / str(shard)
        self.segments = self.dir / "segments"
        self.tombstones = self.dir / "tombstones"
        self.snapshots = self.dir / "snapshots"
        self.class_segments = self.dir / "class_segments"
        self.quarantine = self.dir / "quarantine"
        for folder in (self.segments, self.tombstones, self.snapshots, self.class_segments, self.quarantine):
            folder.mkdir(parents=True, exist_ok=True)
        self.shard = shard
        self.space: str | None = None
        self.version = 0  # the snapshot in use; 0 = none
        self.deleted: set[str] = set()
        # Clips whose segment was damaged and set aside, for the caller to take (take_quarantined).
        self.quarantined: list[str] = []
        # A damaged snapshot was set aside (or named a damaged segment): the next look compacts anew.
        self.rebuild_wanted = False
        self._unusable: set[int] = set()  # snapshot versions that cannot be adopted here
        self._clips: dict[str, ClipData] = {}
        self._segments_mtime: int | None = None  # the segments folder's settled mtime when its names were taken in
        self._frame_dim = 0  # of the segments' frames (a projection's are fewer)
        self._lock = threading.RLock()
        self._live_key: tuple[int, int] = (-1, -1)  # the (clips, tombstones) the live mask and centre are of
        self._live = np.zeros(0, dtype=bool)
        self._centre = np.zeros(0, dtype=np.float32)
        self._layout([], None, [])
        self.refresh()
        if self.deleted:  # tombstones of clips already purged or never here need no memory
            self.deleted &= set(self.clip_ids) | {p.stem for p in self.segments.glob("*.npz")}
            self._live_key = (-1, -1)

    # -- durable state -------------------------------------------------------------------------
    def write_segment(
        self, clip_id: str, arrays: dict[str, np.ndarray], space: str, hop_s: float = FRAME_HOP_S
    ) -> None:
        """Write a clip's frame vectors (one every ``hop_s``) and landmarks; temp file then rename, so no reader
        sees half of one."""
        self.check_space(space)
        hop_ratio(hop_s)  # refused here, not when a search process reads it
        path = self.segments / f"{clip_id}.npz"
        if path.exists():
            return  # idempotent: a retried task writes nothing twice
        columns = {
            "vectors": arrays["vectors"].astype(np.float16),
            "hashes": arrays["hashes"],
            "times": arrays["times"],
            "space": np.array(space),
            HOP_COLUMN: np.array(hop_s),
        }
        # Per-frame labels and class scores when the model has them (YAMNet): a result names what its matched
        # moment holds, and a text search finds it.
        columns.update({name: arrays[name] for name in (*LABEL_COLUMNS, *CLASS_COLUMNS) if name in arrays})
        columns[CHECKSUM_COLUMN] = np.array(columns_digest(columns))
        _write_npz(path, columns)

    def has_class_scores(self, clip_id: str) -> bool:
        """Whether the clip's class scores are on disk (in its segment or beside it)."""
        if (self.class_segments / f"{clip_id}.npz").exists():
            return True
        try:
            with np.load(self.segments / f"{clip_id}.npz") as data:
                return all(name in data.files for name in CLASS_COLUMNS)
        except Exception:  # missing, or damaged (BadZipFile to EOFError): the search process sets it aside
            return False

    def write_class_scores(self, clip_id: str, arrays: dict[str, np.ndarray]) -> bool:
        """Class scores for a clip indexed without them (a re-index); False when it has them or is not here."""
        if not (self.segments / f"{clip_id}.npz").exists() or self.has_class_scores(clip_id):
            return False
        columns = {name: arrays[name] for name in (*LABEL_COLUMNS, *CLASS_COLUMNS) if name in arrays}
        columns[CHECKSUM_COLUMN] = np.array(columns_digest(columns))
        _write_npz(self.class_segments / f"{clip_id}.npz", columns)
        with self._lock:
            self._take_class_segment(clip_id)
        return True

    def _take_class_segment(self, clip_id: str) -> None:
        """Attach a clip's class segment to its data in memory, and its postings if the clip is laid out."""
        position = self.clip_pos.get(clip_id)
        data = self._clips.get(clip_id) if position is None else self._clip_data[position]
        if data is None or data.has_classes:
            return
        if not _attach_classes(data, self.class_segments / f"{clip_id}.npz", self.quarantine):
            return
        if position is not None:
            self._clip_data.keep(position, data)  # a snapshot's clip is otherwise made anew when asked for
            assert data.class_ids is not None and data.class_levels is not None
            self.classes.add(int(self._clip_offsets[position]), data.class_ids, data.class_levels)

    def write_tombstone(self, clip_id: str) -> None:
        (self.tombstones / clip_id).touch()

    def take_tombstone(self, clip_id: str) -> None:
        """Take in one clip's delete, written by this process or another (no folder scan)."""
        with self._lock:
            self.deleted.add(clip_id)

    def take_class_scores(self, clip_id: str) -> None:
        """Take in one clip's class scores, written by a re-index in this process or another (no folder scan)."""
        with self._lock:
            self._take_class_segment(clip_id)

    def add_segment(self, clip_id: str) -> None:
        """Take in one segment this process has just written (no folder scan)."""
        with self._lock:
            if clip_id in self._clips or clip_id in self.clip_pos or clip_id in self.deleted:
                return
            data = self._read_segment(self.segments / f"{clip_id}.npz")
            if data is not None:
                self._clips[clip_id] = data
                self._append([clip_id])

    def check_space(self, space: str) -> None:
        if self.space is not None and space != self.space:
            raise SpaceMismatch(
                f"This library holds vectors of the embedding space {self.space!r}; "
                f"vectors of {space!r} cannot be compared with them."
            )

    def _read_segment(self, path: Path) -> ClipData | None:
        """A segment's clip, or None: a missing file, or a damaged one (set aside, its clip quarantined)."""
        try:
            columns = _checked_columns(path, SEGMENT_COLUMNS)
        except DamagedFile as exc:
            self._set_aside_segment(path, str(exc))
            return None
        if columns is None:
            return None
        self.check_space(str(columns["space"]))
        self.space = str(columns["space"])
        self._frame_dim = int(columns["vectors"].shape[1])
        labelled = all(name in columns for name in LABEL_COLUMNS)
        scored = all(name in columns for name in CLASS_COLUMNS)
        clip = ClipData(
            columns["vectors"].astype(np.float16),
            columns["hashes"],
            columns["times"],
            columns["frame_labels"] if labelled else None,
            columns["label_names"] if labelled else None,
            columns["class_ids"] if scored else None,
            columns["class_levels"] if scored else None,
            hop_ratio(float(columns[HOP_COLUMN])) if HOP_COLUMN in columns else 1,
        )
        if not clip.has_classes:
            _attach_classes(clip, self.class_segments / path.name, self.quarantine)
        return clip

    def _set_aside_segment(self, path: Path, why: str) -> None:
        log.error("shard %s: damaged segment %s set aside (%s)", self.shard, path.name, why)
        _move_aside(path, self.quarantine / f"{path.name}.{os.getpid()}.bad")
        self.quarantined.append(path.stem)

    def take_quarantined(self) -> list[str]:
        """The clips whose segments were set aside since the last call (each once per process)."""
        with self._lock:
            taken, self.quarantined = self.quarantined, []
            return taken

    def refresh(self) -> None:
        """Take in what was written since the last look: tombstones, new segments, a newer snapshot."""
        with self._lock:
            self.deleted.update(p.name for p in self.tombstones.iterdir())
            self._live_key = (-1, -1)
            newest = self._newest_snapshot()
            mtime = settled_mtime(self.segments)
            # Half a million names take a second to list and compare: not again while the folder has not changed
            # since this process, or the compaction of the snapshot it is about to adopt, took them in.
            listed = (self._segments_mtime, newest[3].segments_mtime_ns if newest is not None else None)
            added = [] if mtime is not None and mtime in listed else self._new_segments(newest)
            self._segments_mtime = mtime
            if not (newest is not None and self._adopt(*newest)) and added:
                self._append(added)
            # Class scores written (by a re-index) for clips held without them, snapshot clips included.
            for path in self.class_segments.glob("*.npz"):
                self._take_class_segment(path.stem)

    def _new_segments(self, newest: tuple[int, Path, list[tuple[str, int]], Sealed] | None) -> list[str]:
        """Read the segments this process does not hold (nor the snapshot it is about to adopt), in name order."""
        # A snapshot that keeps its clips' columns holds them: their segments are not read.
        sealed = {c for c, _ in newest[2]} if newest is not None and newest[3].columns is not None else set()
        held = self._clips.keys() | self.clip_pos.keys() | self.deleted | sealed
        # Names, not paths, and only the new ones sorted: a shard of 500 000 clips spent seconds of its start
        # comparing Path objects (docs/benchmarks.md, "All of AudioSet's frames").
        found = (name[: -len(".npz")] for name in os.listdir(self.segments) if name.endswith(".npz"))
        added = []
        for clip_id in sorted(c for c in found if c not in held):
            data = self._read_segment(self.segments / f"{clip_id}.npz")
            if data is not None:
                self._clips[clip_id] = data
                added.append(clip_id)
        return added

    # -- snapshots -----------------------------------------------------------------------------
    def _snapshot_dirs(self) -> list[tuple[int, Path]]:
        found = []
        for path in self.snapshots.iterdir():
            if path.name.startswith("v") and path.name[1:].isdigit() and (path / SNAPSHOT_MARKER).exists():
                found.append((int(path.name[1:]), path))
        return sorted(found, reverse=True)

    def _newest_snapshot(self) -> tuple[int, Path, list[tuple[str, int]], Sealed] | None:
        """The newest snapshot that loads; a damaged one is set aside (and the one before it tried)."""
        for version, path in self._snapshot_dirs():
            if version <= self.version:
                return None
            if version in self._unusable:
                continue
            try:
                order, sealed = read_snapshot(path)
                return version, path, order, sealed
            except Exception as exc:  # a damaged snapshot of any kind must never stop the shard
                log.error(
                    "shard %s: snapshot %s damaged, set aside; rebuilding from segments: %s", self.shard, path, exc
                )
                self._set_aside_snapshot(version, path)
        return None

    def _set_aside_snapshot(self, version: int, path: Path) -> None:
        self._unusable.add(version)
        self.rebuild_wanted = True
        with contextlib.suppress(OSError):  # another replica set it aside first
            os.replace(path, self.quarantine / f"snapshot-v{version}.{os.getpid()}.bad")

    def _adopt(self, version: int, path: Path, clips: list[tuple[str, int]], sealed: Sealed) -> bool:
        """Swap to a snapshot: its clips first, in its row order, then the delta; False when it cannot be."""
        order = [clip_id for clip_id, _ in clips]
        if sealed.columns is not None and self._clips:
            # Its clips are made from its mapped columns when asked for (their own copies, if any, leave memory):
            # deleted ones too, as ScaNN's row numbering includes them.
            for clip_id in order:
                self._clips.pop(clip_id, None)
        # A snapshot written before the columns were kept: its clips are read from their segments.
        missing = [c for c in order if c not in self._clips] if sealed.columns is None else []
        for clip_id in missing:
            data = self._read_segment(self.segments / f"{clip_id}.npz")
            if data is None:
                # Its rows are numbered with that clip's: unusable. The segments are searched until a rebuild.
                log.error("shard %s: snapshot v%d names %s but its segment is unreadable", self.shard, version, clip_id)
                self._unusable.add(version)
                self.rebuild_wanted = True
                return False
            self._clips[clip_id] = data
        frames = [n for _, n in clips]
        self._layout(order, sealed, frames)
        # A start from the snapshot alone reads no segment: the space a query is checked against is the snapshot's.
        self.space = self.space or sealed.space
        self.version = version
        self.rebuild_wanted = False
        log.info("shard %s: now on snapshot v%d (%d sealed rows)", self.shard, version, sum(frames))
        return True

    def compact(self) -> int:
        """Build a ScaNN index over every live clip, write it as the next snapshot, swap to it, purge.

        Returns the new version. Queries keep being answered from the current state until the swap.
        """
        with self._lock:
            self.refresh()
            order = [c for c in self.clip_ids if c not in self.deleted]
            kept = [self._clip_data[self.clip_pos[c]] for c in order]
            stored = [data.vectors for data in kept]
            dead = [c for c in self.clip_ids if c in self.deleted]
            # The layout's arrays, not a view: a view also builds the delta's float32 copy, which this never reads.
            layout = (
                self.landmarks.sorted_view(),
                self.classes.sorted_view(),
                self.live_mask(),
                self._clip_offsets,
                self.row_clip,
                self.row_frame,
            )
            space = (self._projection, self._projection_rows)
            listed = self._segments_mtime  # what the refresh above listed: ``order`` holds every segment of it
        if not order:
            self.rebuild_wanted = False  # nothing left to index
            return self.version
        coded, projection, fitted = self._coded_frames(order, stored, *space)
        codes, scales = (np.concatenate(column) for column in zip(*coded, strict=True))
        del stored, coded
        vectors = codes.astype(np.float32)  # ScaNN indexes the very frames the shard re-scores from
        vectors *= scales[:, None]
        total, audible = _frame_sum(vectors)
        arrays = {
            "codes": codes,
            "code_scales": scales,
            "frame_total": np.append(total, audible),
            **_renumbered_postings(*layout),
            **_clip_columns(kept),
            **({} if projection is None else {"projection_axes": projection.axes}),
        }
        searcher, rescore = scann_searcher(vectors, neighbours=10)
        rows = int(vectors.shape[0])
        del vectors
        # Never a version number used before, a set-aside one included: replicas skip versions they found bad.
        set_aside = (p.name.split(".")[0][len("snapshot-v") :] for p in self.quarantine.glob("snapshot-v*"))
        used = [v for v, _ in self._snapshot_dirs()] + [int(v) for v in set_aside if v.isdigit()]
        version = max([self.version, *used]) + 1
        final = self.snapshots / f"v{version}"
        tmp = self.snapshots / f".v{version}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "scann").mkdir(parents=True)
        searcher.serialize(str(tmp / "scann"), relative_path=True)  # the folder is renamed next
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", array)
        del arrays  # the shard maps the files instead
        clips = [(c, int(data.vectors.shape[0])) for c, data in zip(order, kept, strict=True)]
        del kept
        digests = Digests(tmp)  # its stamps are the files' own: the search processes' starts read none of them
        manifest = {
            "files": folder_digests(tmp / "scann", digests),
            "arrays": {p.stem: digests(p) for p in sorted(tmp.glob("*.npy"))},
            "rescore": rescore,
            "projection_rows": fitted,
            "segments_mtime_ns": listed,
            "version": version,
            "rows": rows,
            "space": self.space,
            "clips": clips,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest))
        digests.save()
        (tmp / SNAPSHOT_MARKER).touch()
        os.replace(tmp, final)
        sealed = Sealed(searcher, rescore, projection_rows=fitted, segments_mtime_ns=listed)
        sealed.map_arrays(final)
        with self._lock:
            self._adopt(version, final, clips, sealed)
        self._purge(dead, keep_version=version)
        return version

    def _coded_frames(
        self, order: list[str], stored: list[Stored], current: Projection | None, fitted: int
    ) -> tuple[list[tuple[np.ndarray, np.ndarray]], Projection | None, int]:
        """The clips' frames as the next snapshot keeps them (int8 codes and scales, clip by clip), the projection
        they are in and the shard's rows when it was fitted; ``stored``, their frames in the layout's space,
        ``current`` and ``fitted``, the layout's projection and its rows.

        The shard's projection is kept while it fits (ECHOVIDS_SEARCH_PROJECTION_AXES axes, fitted when the
        shard had half its rows or PROJECTION_SAMPLE_ROWS): a sealed clip's codes are taken as they are and a new
        clip's frames, projected when laid out, are coded once. Otherwise every clip is projected anew from its
        frames at their own dimension (or kept at it, when no axes are set or the frames have no more dimensions
        than that)."""
        from echovids.settings import get_settings

        axes = get_settings().search_projection_axes
        rows = sum(int(f.shape[0]) for f in stored)
        if current is None:
            keep = not 0 < axes < stored[0].shape[1] - 1
        else:
            keep = current.axes.shape[1] == axes and (2 * fitted > rows or fitted >= PROJECTION_SAMPLE_ROWS)
        if keep:
            # A sealed clip's codes are taken as they are; a new clip's float16 frames are coded once, here.
            coded = [(f.codes, f.scales) if isinstance(f, Int8Frames) else int8_rows(f) for f in stored]
            return coded, current, fitted
        full = (self._full_frames(c, f, current) for c, f in zip(order, stored, strict=True))
        if axes == 0 or (current is not None and axes + 1 >= current.dim):
            return [int8_rows(f) for f in full], None, 0
        # Rows at random for the fit (a clip's frames are alike: a whole-clip sample says less), then each clip.
        rng = np.random.default_rng(0)
        chosen = rng.random(rows) < PROJECTION_SAMPLE_ROWS / rows
        starts = np.cumsum([0, *(int(f.shape[0]) for f in stored)])
        sample = [
            self._full_frames(c, f, current)[chosen[starts[i] : starts[i + 1]]]
            for i, (c, f) in enumerate(zip(order, stored, strict=True))
            if chosen[starts[i] : starts[i + 1]].any()
        ]
        projection = Projection.fit(np.concatenate(sample), axes)
        del sample
        return [int8_rows(projection(f)) for f in full], projection, rows

    def _full_frames(self, clip_id: str, frames: Stored, projection: Projection | None) -> np.ndarray:
        """A clip's frames at their own dimension: as the shard holds them, or, when they are held projected,
        its segment's (a damaged or missing segment stops the compaction: its clip is quarantined first)."""
        if projection is None:
            if isinstance(frames, Int8Frames):
                return frames.codes.astype(np.float32) * frames.scales[:, None]
            return np.asarray(frames, dtype=np.float32)
        data = self._read_segment(self.segments / f"{clip_id}.npz")
        if data is None:
            raise DamagedFile(f"the segment of {clip_id} is missing or damaged: its frames cannot be projected anew")
        assert isinstance(data.vectors, np.ndarray)
        return data.vectors.astype(np.float32)

    def _purge(self, dead: list[str], keep_version: int) -> None:
        """Drop deleted clips' files (segment before tombstone, so a crash never resurrects one) and old snapshots."""
        for clip_id in dead:
            (self.segments / f"{clip_id}.npz").unlink(missing_ok=True)
            (self.class_segments / f"{clip_id}.npz").unlink(missing_ok=True)
            (self.tombstones / clip_id).unlink(missing_ok=True)
        for version, path in self._snapshot_dirs():
            if version < keep_version - 1:  # keep one older snapshot for replicas still swapping
                shutil.rmtree(path, ignore_errors=True)

    # -- memory --------------------------------------------------------------------------------
    def _layout(self, sealed_order: list[str], sealed: Sealed | None, frames: list[int]) -> None:
        """Lay rows out: the snapshot's clips (rows [0, sealed), in ScaNN's numbering; ``frames`` a clip), then
        the delta."""
        # Deleted clips outside the snapshot leave memory now; inside it they keep their rows (ScaNN's
        # numbering) until the next compaction and are filtered at query time.
        gone = [c for c in self._clips if c in self.deleted]
        if gone:
            sealed_set = set(sealed_order)
            for clip_id in [c for c in gone if c not in sealed_set]:
                del self._clips[clip_id]
        # A snapshot that keeps its clips' columns and postings is laid out whole, from its manifest: its clips
        # are made from the columns when asked for, and its postings are not added again.
        indexed = sealed is not None and sealed.columns is not None
        table = sealed.clips(frames) if sealed is not None and indexed else None
        counts = table.frames if table is not None else np.zeros(0, np.int64)
        # New lists, never emptied in place: a view taken before this layout keeps its own.
        self.clip_ids: list[str] = list(sealed_order) if indexed else []
        self._clip_data = ClipTable(table)
        self.landmarks = LandmarkPostings(sealed.landmarks if sealed is not None else None)
        self.classes = ClassPostings(sealed.classes if sealed is not None else None)
        # Rows of the clips placed one by one, after the snapshot's (whose are ``table``'s).
        self._row_starts: list[int] = []
        starts = table.starts if table is not None else np.zeros(0, np.int64)
        self._row_clip_parts = [np.repeat(np.arange(counts.size, dtype=np.int32), counts)]
        self._row_frame_parts = [(np.arange(counts.sum()) - np.repeat(starts, counts)).astype(np.int32)]
        self._clip_hops: list[int] = []
        self._delta_parts: list[np.ndarray] = []
        self._searcher = sealed
        self._sealed = sum(frames) if sealed is not None else 0
        self._projection = sealed.projection if sealed is not None else None
        self._projection_rows = sealed.projection_rows if sealed is not None else 0
        self._rows = int(counts.sum())
        self._frame_sum: np.ndarray | None = None  # of every placed clip's frames (muted silence adds nothing)
        self._audible = 0  # non-zero frames among them
        if sealed is not None and indexed:
            # A snapshot that keeps its frames' total is not read through for it: a start touches no frame.
            total = sealed.frame_total
            stored = sealed.frames
            assert stored is not None
            self._frame_sum, self._audible = total if total is not None else _frame_sum(stored)
        elif sealed is not None:
            for clip_id in sealed_order:
                self._place(clip_id, delta=False)
        if self._clips:  # none at a start from a snapshot that keeps its clips' columns
            placed = set(self.clip_ids)  # once: a set per clip made a 50k-clip layout take minutes
            for clip_id in sorted(c for c in self._clips if c not in placed):
                self._place(clip_id, delta=True)
        self._pack()

    def _place(self, clip_id: str, delta: bool) -> None:
        """Lay a clip's rows out next, its postings and its frames' sum with them."""
        data = self._clips[clip_id] = self._in_space(clip_id) if delta else self._clips[clip_id]
        n = data.vectors.shape[0]
        position = len(self.clip_ids)
        self.clip_ids.append(clip_id)
        self._clip_data.append(data)
        self._row_clip_parts.append(np.full(n, position, dtype=np.int32))
        self._row_frame_parts.append(np.arange(n, dtype=np.int32))
        self._clip_hops.append(data.hop)
        if delta:
            assert isinstance(data.vectors, np.ndarray), "a delta clip's frames are its segment's"
            self._delta_parts.append(data.vectors)
        self.landmarks.add(position, data.hashes, data.times)
        self._row_starts.append(self._rows)
        if data.class_ids is not None and data.class_levels is not None:
            self.classes.add(self._rows, data.class_ids, data.class_levels)
        self._rows += n
        frame_sum, audible = _frame_sum(data.vectors)
        self._frame_sum = frame_sum if self._frame_sum is None else self._frame_sum + frame_sum
        self._audible += audible

    def _in_space(self, clip_id: str) -> ClipData:
        """A delta clip with its frames in the layout's space: projected when the snapshot's are, as its segment
        holds them when not (a new copy either way: a view taken before keeps the clip as it was)."""
        data = self._clips[clip_id]
        assert isinstance(data.vectors, np.ndarray), "a delta clip's frames are its segment's (or their projection)"
        dim = data.vectors.shape[1]
        if self._projection is not None and dim == self._projection.dim:
            return replace(data, vectors=self._projection(data.vectors).astype(np.float16))
        if self._projection is None and dim != self._frame_dim:  # projected under the layout before this one
            again = self._read_segment(self.segments / f"{clip_id}.npz")
            if again is None:
                raise DamagedFile(f"the segment of {clip_id} is missing or damaged: its frames cannot be read again")
            return again
        return data

    def _pack(self) -> None:
        self.clip_pos = {c: i for i, c in enumerate(self.clip_ids)}
        self._changed()

    def _changed(self) -> None:
        """Clips were placed: the row arrays are joined again when next read, not per clip (a bulk load adds
        clips one at a time, and joining the whole shard's rows each time made it quadratic)."""
        self._live_key = (-1, -1)
        self._joined: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None] | None = None
        self._delta: np.ndarray | None = None  # built on the next search: a bulk load never holds two copies

    def _rows_joined(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """(row_clip, row_frame, clip_offsets, clip_hops) of the layout as it is now; clip_hops is None when
        every clip's frames come at the query's hop."""
        if self._joined is None:
            row_clip = np.concatenate(self._row_clip_parts) if self._row_clip_parts else np.zeros(0, np.int32)
            row_frame = np.concatenate(self._row_frame_parts) if self._row_frame_parts else np.zeros(0, np.int32)
            self._row_clip_parts, self._row_frame_parts = [row_clip], [row_frame]
            sealed = self._clip_data.sealed
            hops = np.concatenate(
                [sealed.hops if sealed is not None else np.zeros(0, np.int64), np.array(self._clip_hops, np.int64)]
            )
            starts = np.concatenate(
                [
                    sealed.starts if sealed is not None else np.zeros(0, np.int64),
                    np.array([*self._row_starts, self._rows], dtype=np.int64),
                ]
            )
            self._joined = (row_clip, row_frame, starts, hops if hops.size and hops.max() > 1 else None)
        return self._joined

    @property
    def row_clip(self) -> np.ndarray:
        return self._rows_joined()[0]

    @property
    def row_frame(self) -> np.ndarray:
        return self._rows_joined()[1]

    @property
    def _clip_offsets(self) -> np.ndarray:
        return self._rows_joined()[2]

    def _append(self, clip_ids: list[str]) -> None:
        """New clips join the delta; the sealed rows and the ScaNN searcher stay as they are."""
        for clip_id in clip_ids:
            self.clip_pos[clip_id] = len(self.clip_ids)
            self._place(clip_id, delta=True)
        self._changed()

    @property
    def rows(self) -> int:
        return self._rows

    @property
    def delta_rows(self) -> int:
        return self._rows - self._sealed

    def live_mask(self) -> np.ndarray:
        """True for each clip position not tombstoned."""
        self._update_live()
        return self._live

    def centre(self) -> np.ndarray:
        """The live clips' average audible frame, the "average sound" similar matches are scored against."""
        self._update_live()
        return self._centre

    def _update_live(self) -> None:
        """The live mask and centre, again once clips or tombstones came (cached: a large shard has many clips)."""
        key = (len(self.clip_ids), len(self.deleted))
        if self._live_key == key:
            return
        if self.deleted:
            self._live = np.array([cid not in self.deleted for cid in self.clip_ids], dtype=bool)
        else:
            self._live = np.ones(len(self.clip_ids), dtype=bool)
        total, audible = self._frame_sum, self._audible
        if total is None:
            self._centre = np.zeros(0, dtype=np.float32)
        else:
            # Tombstoned clips keep their rows until the next compaction; they are no part of the library.
            for position in np.flatnonzero(~self._live):
                gone_sum, gone = _frame_sum(self._clip_data[position].vectors)
                total, audible = total - gone_sum, audible - gone
            self._centre = (total / max(audible, 1)).astype(np.float32)
        self._live_key = key

    def view(self) -> ShardView:
        """The shard as it is now, for one query: a later write or swap never changes what it reads."""
        with self._lock:
            if self._delta is None and self._delta_parts:
                self._delta = np.concatenate(self._delta_parts).astype(np.float32)
                self._delta_parts = [self._delta]
            return ShardView(
                clip_ids=self.clip_ids,
                clip_data=self._clip_data,
                row_clip=self.row_clip,
                row_frame=self.row_frame,
                searcher=self._searcher,
                sealed=self._sealed,
                delta=self._delta,
                postings=self.landmarks.sorted_view(),
                live=self.live_mask(),
                centre=self.centre(),
                class_postings=self.classes.sorted_view(),
                clip_offsets=self._clip_offsets,
                clip_hops=self._rows_joined()[3],
                projection=self._projection,
            )


@dataclass(frozen=True)
class ShardView:
    """One consistent state of a shard: the rows a search returns name the clips they meant.

    A compaction lays the rows out anew; a query that read its rows from one layout and its clip names from
    the next would name the wrong clips (or none). ``clip_ids`` and ``clip_data`` may grow after the view is
    taken (new clips are appended; a new layout builds new lists), so every position the view hands out stays
    valid.
    """

    clip_ids: list[str]
    clip_data: ClipTable
    row_clip: np.ndarray  # clip position of each row
    row_frame: np.ndarray  # frame within its clip of each row
    searcher: Sealed | None  # ScaNN over rows [0, sealed)
    sealed: int
    delta: np.ndarray | None  # rows [sealed, ...), searched exactly
    postings: Postings
    live: np.ndarray  # per clip position: False once tombstoned
    centre: np.ndarray  # the live clips' average audible frame (ShardIndex.centre)
    class_postings: tuple[SortedClassPostings, ...]
    clip_offsets: np.ndarray  # clip position p's rows are clip_offsets[p]:clip_offsets[p + 1]
    # Query hops per stored frame of each clip position (None: one for every clip). A search's frame positions
    # and offsets are in query hops throughout; clip_frames reads a coarser clip at them (Upsampled).
    clip_hops: np.ndarray | None = None
    projection: Projection | None = None  # what the frames were projected by (the snapshot's)

    @property
    def rows(self) -> int:
        return int(self.row_clip.size)

    def scored_clips(self) -> int:
        """Live clips a text search can find: those with class scores."""
        live = np.flatnonzero(self.live[: len(self.clip_offsets) - 1])
        return sum(1 for p in live if self.clip_data[p].has_classes)

    def match_classes(
        self, class_ids: np.ndarray, weights: np.ndarray, allowed: np.ndarray, stretch: int, first: int | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The allowed live clip positions that the class mixture finds, best first, with each best stretch's
        score and first frame; with ``first``, only that many."""
        clips = len(self.clip_offsets) - 1
        return match_classes(
            self.class_postings,
            class_ids,
            weights,
            self.clip_offsets,
            allowed[:clips] & self.live[:clips],
            stretch,
            first,
        )

    def live_clips(self, allowed: np.ndarray | None = None) -> int:
        """Clips a query can find: those not tombstoned (and ``allowed``, when given)."""
        return int((self.live if allowed is None else self.live & allowed).sum())

    def clip_labels(self, clip: int, start: int, frames: int) -> list[str]:
        """The classes heard most over query hops [start, start + frames) of a clip."""
        if self.clip_data.label_names(clip) is None:  # none kept (AudioSet's features): no clip to make
            return []
        data = self.clip_data[clip]  # a snapshot's clip is made from its columns at each ask
        return data.labels_at(start // data.hop, -(-frames // data.hop))

    def project(self, vectors: np.ndarray) -> np.ndarray:
        """A query's frames in the space of the shard's frames (float32)."""
        return vectors.astype(np.float32) if self.projection is None else self.projection(vectors)

    def clip_frames(self, clip: int) -> Frames:
        """A clip's frame vectors at the query's hop (float16 or int8 codes; callers convert just the frames they
        read)."""
        return self.clip_data.frames(clip)

    def match_landmarks(
        self,
        hashes: np.ndarray,
        times: np.ndarray,
        limit: int,
        weights: np.ndarray | None = None,
        allowed: np.ndarray | None = None,
        min_hits: int = 2,
    ) -> list[LandmarkMatch]:
        live = self.live if allowed is None else self.live & allowed
        return match_postings(self.postings, hashes, times, live, limit, weights, min_hits)

    def match_steady(
        self, hashes: np.ndarray, times: np.ndarray, limit: int, allowed: np.ndarray | None = None
    ) -> list[LandmarkMatch]:
        live = self.live if allowed is None else self.live & allowed
        seconds = np.zeros(live.size)
        frames = np.diff(self.clip_offsets)[: live.size]
        seconds[: frames.size] = frames * FRAME_HOP_S * (1 if self.clip_hops is None else self.clip_hops[: frames.size])
        return steady_clips(self.postings, hashes, times, live, seconds, limit)

    def search(
        self, queries: np.ndarray, neighbours: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Nearest rows for each query frame, by dot product of unit vectors (= cosine); -1 pads.

        A zero frame (muted silence) is like nothing, so it is not searched: its row is all -1. Rows of clips
        tombstoned or not ``allowed`` (a filter's mask over clip positions) are -1 too.
        """
        m = queries.shape[0]
        audible = queries.any(axis=1)
        if not audible.all():
            rows, sims = self._search(queries[audible], neighbours, allowed)
            all_rows = np.full((m, rows.shape[1]), -1, dtype=np.int64)
            all_sims = np.zeros((m, sims.shape[1]), dtype=np.float32)
            all_rows[audible], all_sims[audible] = rows, sims
            return all_rows, all_sims
        return self._search(queries, neighbours, allowed)

    def _search(
        self, queries: np.ndarray, neighbours: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        m = queries.shape[0]
        parts_rows, parts_sims = [], []
        if self.searcher is not None and self.sealed and m:
            rows, sims = self.searcher.search(queries, min(neighbours, self.sealed))
            parts_rows.append(rows)
            parts_sims.append(sims)
        if self.delta is not None and m:
            sims = queries @ self.delta.T
            k = min(neighbours, self.delta.shape[0])
            top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            parts_rows.append(top + self.sealed)
            parts_sims.append(np.take_along_axis(sims, top, axis=1))
        if not parts_rows:
            return np.full((m, 0), -1, dtype=np.int64), np.zeros((m, 0), dtype=np.float32)
        rows = np.concatenate(parts_rows, axis=1)
        sims = np.concatenate(parts_sims, axis=1).astype(np.float32)
        live = self.live if allowed is None else self.live & allowed
        if not live.all():
            gone = ~live[self.row_clip[rows]]
            rows = np.where(gone, -1, rows)
            sims = np.where(gone, 0.0, sims)
        return rows, sims
