"""AudioSet's released material, imported without any audio download: segment CSVs and VGGish frame features.

Reading the features needs no TensorFlow: TFRecord framing and the ``tf.train.SequenceExample`` protobuf are
decoded here from their wire formats (a few dozen lines; the messages involved are Features/FeatureLists of
Bytes/Float/Int64 lists). The length header's CRC-32C is checked, which catches a misaligned or truncated
file; the payload's CRC is not (pure-Python CRC would cost more than the import), but a damaged payload fails
protobuf decoding or the shape checks below and is counted as a malformed record.

Time base. AudioSet has one 128-byte feature per 0.96 s (VGGish examples, no overlap), and the import keeps them
at that hop (``vggish_space``'s ``hop_s``): a query is framed every 0.48 s (``audio_params.FRAME_HOP_S``), and the
search reads such a clip at the query's hop, position 2j being feature j and 2j+1 the mix of j and j+1, made for
the few frames a match compares (services/search/matching.py, ``Upsampled``). A feature is stored once: 128-d
float16, 256 bytes per 0.96 s, 1 MB per hour of audio.

Vectors: uint8 -> float as Google's postprocess inverted (``vectors.dequantize``: the whitened PCA values), then L2
normalised, so a dot product is a cosine. The embedding space is ``vggish:<version>:128``; the version defaults
to ``audioset-pca-uint8``. A VGGish model that should query such a library must report the same space (set the
import's ``--space-version`` to the model's version, which includes its PCA parameters' digest).
"""

from __future__ import annotations

import csv
import hashlib
import re
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from echovids.audio_params import VGGISH_EMBEDDING_DIM, VGGISH_FEATURE_HOP_S
from echovids.schemas import ClipStatus, EmbeddingSpace
from echovids.vectors import dequantize, l2_normalise

DEFAULT_SPACE_VERSION = "audioset-pca-uint8"


def vggish_space(version: str = DEFAULT_SPACE_VERSION) -> EmbeddingSpace:
    """AudioSet's features: VGGish's space, a frame every 0.96 s."""
    return EmbeddingSpace(model="vggish", version=version, dim=VGGISH_EMBEDDING_DIM, hop_s=VGGISH_FEATURE_HOP_S)


# -- CRC-32C (Castagnoli), for TFRecord length headers --------------------------------------------------------
def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


class MalformedRecord(Exception):
    pass


def tfrecords(path: Path) -> Iterator[bytes | MalformedRecord]:
    """The records of a TFRecord file; a damaged one yields a MalformedRecord (a broken frame ends the file)."""
    with path.open("rb") as f:
        while True:
            header = f.read(12)
            if not header:
                return
            if len(header) < 12:
                yield MalformedRecord(f"{path}: truncated record header")
                return
            length, crc = struct.unpack("<QI", header)
            if masked_crc(header[:8]) != crc:
                yield MalformedRecord(f"{path}: bad length checksum; the rest of the file is skipped")
                return
            data = f.read(length)
            footer = f.read(4)
            if len(data) < length or len(footer) < 4:
                yield MalformedRecord(f"{path}: truncated record")
                return
            yield data


# -- protobuf wire format, just what tf.train.SequenceExample needs -------------------------------------------
def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise MalformedRecord("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise MalformedRecord("varint too long")


def _fields(buf: bytes) -> Iterator[tuple[int, int, bytes | int]]:
    """(field number, wire type, value): bytes for length-delimited and fixed32, int for varints."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield number, wire, value
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > end:
                raise MalformedRecord("truncated field")
            yield number, wire, buf[pos : pos + length]
            pos += length
        elif wire == 5:
            if pos + 4 > end:
                raise MalformedRecord("truncated fixed32")
            yield number, wire, buf[pos : pos + 4]
            pos += 4
        elif wire == 1:
            if pos + 8 > end:
                raise MalformedRecord("truncated fixed64")
            yield number, wire, buf[pos : pos + 8]
            pos += 8
        else:
            raise MalformedRecord(f"unsupported wire type {wire}")


def _feature(buf: bytes) -> list[bytes] | list[float] | list[int]:
    """A tf.train.Feature: bytes_list = 1, float_list = 2, int64_list = 3 (each: repeated value = 1)."""
    for kind, _, inner in _fields(buf):
        assert isinstance(inner, bytes)
        values: list = []
        for number, wire, value in _fields(inner):
            if number != 1:
                continue
            if kind == 1:
                values.append(value)
            elif kind == 2:
                values.extend(struct.unpack(f"<{len(value) // 4}f", value) if wire == 2 else struct.unpack("<f", value))  # type: ignore[arg-type]
            elif kind == 3:
                if wire == 2:
                    assert isinstance(value, bytes)
                    pos = 0
                    while pos < len(value):
                        v, pos = _varint(value, pos)
                        values.append(v - (1 << 64) if v >= 1 << 63 else v)
                else:
                    assert isinstance(value, int)
                    values.append(value - (1 << 64) if value >= 1 << 63 else value)
        return values
    return []


def _map_entries(buf: bytes) -> Iterator[tuple[str, bytes]]:
    """The entries of a map<string, message> field numbered 1 (Features.feature, FeatureLists.feature_list)."""
    for number, _, entry in _fields(buf):
        if number != 1 or not isinstance(entry, bytes):
            continue
        key, value = "", b""
        for n, _, v in _fields(entry):
            if n == 1 and isinstance(v, bytes):
                key = v.decode("utf-8", "replace")
            elif n == 2 and isinstance(v, bytes):
                value = v
        yield key, value


@dataclass
class FeatureRecord:
    video_id: str
    start_s: float
    end_s: float
    labels: list[int]
    features: np.ndarray  # [n, 128] uint8, one per 0.96 s


def parse_sequence_example(buf: bytes) -> FeatureRecord:
    """An AudioSet SequenceExample: context video_id, start/end_time_seconds, labels; audio_embedding frames."""
    context: dict[str, list] = {}
    frames: list[bytes] = []
    for number, _, value in _fields(buf):
        if not isinstance(value, bytes):
            continue
        if number == 1:
            context = {k: _feature(v) for k, v in _map_entries(value)}
        elif number == 2:
            for name, feature_list in _map_entries(value):
                if name != "audio_embedding":
                    continue
                for n, _, feature in _fields(feature_list):
                    if n == 1 and isinstance(feature, bytes):
                        frames.extend(_feature(feature))  # type: ignore[arg-type]
    try:
        video_id = context["video_id"][0].decode()
        start_s = float(context["start_time_seconds"][0])
        end_s = float(context["end_time_seconds"][0])
    except (KeyError, IndexError, AttributeError, UnicodeDecodeError) as exc:
        raise MalformedRecord(f"missing context feature ({exc})") from exc
    if not frames or any(not isinstance(f, bytes) or len(f) != VGGISH_EMBEDDING_DIM for f in frames):
        raise MalformedRecord(f"{video_id}: audio_embedding must be {VGGISH_EMBEDDING_DIM} bytes per frame")
    features = np.frombuffer(b"".join(frames), dtype=np.uint8).reshape(-1, VGGISH_EMBEDDING_DIM)
    return FeatureRecord(video_id, start_s, end_s, [int(x) for x in context.get("labels", [])], features)


# -- vectors -----------------------------------------------------------------------------------------------------
def to_search_frames(features: np.ndarray) -> np.ndarray:
    """[n, 128] uint8 -> [n, 128] unit vectors, one per 0.96 s as released (see the module's note)."""
    return l2_normalise(dequantize(features))


# -- segment CSVs --------------------------------------------------------------------------------------------------
@dataclass
class Segment:
    ytid: str
    start_s: float
    end_s: float
    labels: list[str]  # AudioSet ids


def segment_key(ytid: str, start_s: float) -> tuple[str, int]:
    return ytid, round(start_s * 1000)


def read_segments(path: Path) -> tuple[dict[tuple[str, int], Segment], list[str]]:
    """Segments by (YTID, start in ms), and a description of each malformed line."""
    segments: dict[tuple[str, int], Segment] = {}
    bad: list[str] = []
    with path.open(newline="", encoding="utf-8", errors="replace") as f:
        for number, row in enumerate(csv.reader(f, skipinitialspace=True), 1):
            if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            try:
                if len(row) != 4:
                    raise ValueError(f"{len(row)} columns, expected 4")
                ytid = row[0].strip()
                if not re.fullmatch(r"[A-Za-z0-9_-]{11}", ytid):
                    raise ValueError(f"not a YouTube id: {ytid!r}")
                start, end = float(row[1]), float(row[2])
                if not (0 <= start < end):
                    raise ValueError(f"bad times {start}..{end}")
                labels = [x.strip() for x in row[3].split(",") if x.strip()]
            except ValueError as exc:
                bad.append(f"{path}:{number}: {exc}")
                continue
            segments[segment_key(ytid, start)] = Segment(ytid, start, end, labels)
    return segments, bad


def clip_id_for(ytid: str, start_s: float) -> str:
    """Stable, so a second import of the same segment finds it (and clip_audio's id pattern accepts it)."""
    return f"yt_{ytid}_{round(start_s * 1000)}"


# -- the import ----------------------------------------------------------------------------------------------------
@dataclass
class ImportReport:
    records: int = 0
    added: int = 0
    already: int = 0
    not_in_segments: int = 0
    malformed_lines: list[str] = field(default_factory=list)
    malformed_records: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    missing_features: int = 0
    submit_s: float = 0.0  # reading, parsing and sending
    wall_s: float = 0.0  # and waiting for the shards

    def summary(self) -> str:
        rate = self.records / self.submit_s if self.submit_s else 0.0
        return (
            f"imported {self.added} AudioSet clips ({self.already} already in the library); {self.records} "
            f"records read and sent in {self.submit_s:.1f} s ({rate:.0f} records/s), all indexed after "
            f"{self.wall_s:.1f} s; {len(self.malformed_records)} "
            f"malformed records, {len(self.malformed_lines)} malformed CSV lines, {self.not_in_segments} "
            f"records not in the segment CSVs, {self.missing_features} segments without features, "
            f"{len(self.failed)} failed to index"
        )


def feature_files(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out += sorted(p for p in path.rglob("*.tfrecord") if p.is_file())
        elif path.is_file():
            out.append(path)
    return out


def import_audioset(
    segment_csvs: list[Path],
    feature_paths: list[Path],
    space_version: str = DEFAULT_SPACE_VERSION,
    batch: int = 256,
    wait: bool = True,
    timeout_s: float = 3600.0,
    in_flight: int = 5000,
    progress: Callable[[str], None] | None = None,
    progress_every_s: float = 10.0,
) -> ImportReport:
    """Add every record whose segment is in the CSVs as a YouTube clip, indexed by its shard's worker.

    ``wait``: until the shards have indexed every clip, or none has been indexed for ``timeout_s``.
    ``in_flight``: clips sent and not yet taken by a shard, at most (see ``_hold_back``).
    ``progress``: told a line of where the import stands every ``progress_every_s`` (a 200 000-segment import
    takes half an hour here), and when the sending ends.
    """
    from echovids import catalog
    from echovids.errors import SpaceMismatch
    from echovids.labels import label_name

    report = ImportReport()
    started = time.monotonic()
    segments: dict[tuple[str, int], Segment] = {}
    for path in segment_csvs:
        found, bad = read_segments(path)
        segments.update(found)
        report.malformed_lines += bad
    space = vggish_space(space_version)
    with catalog.session() as s:
        from sqlalchemy import select

        other = s.scalar(
            select(catalog.Clip.space)
            .where(catalog.Clip.status == ClipStatus.ready, catalog.Clip.space != space.key)
            .limit(1)
        )
    if other:
        raise SpaceMismatch(
            f"The library holds vectors of the embedding space {other!r}; AudioSet's features are "
            f"{space.key!r} and cannot be searched beside them."
        )
    seen: set[tuple[str, int]] = set()
    sent: dict[str, str] = {}  # clip id -> job id
    pending: list[tuple[Segment, FeatureRecord]] = []
    tell = _Progress(progress, progress_every_s, started)

    def flush() -> None:
        _hold_back(in_flight)
        _submit(pending, space, report, sent)
        pending.clear()
        tell(f"{report.records} records read, {len(sent)} clips sent to the shards ({report.already} in already)")

    for path in feature_files(feature_paths):
        for item in tfrecords(path):
            if isinstance(item, MalformedRecord):
                report.malformed_records.append(str(item))
                continue
            report.records += 1
            try:
                record = parse_sequence_example(item)
            except MalformedRecord as exc:
                report.malformed_records.append(f"{path}: record {report.records}: {exc}")
                continue
            key = segment_key(record.video_id, record.start_s)
            segment = segments.get(key)
            if segment is None:
                report.not_in_segments += 1
                continue
            seen.add(key)
            segment.labels = [label_name(x) for x in segment.labels]
            pending.append((segment, record))
            if len(pending) >= batch:
                flush()
    flush()
    report.submit_s = time.monotonic() - started
    report.missing_features = len(set(segments) - seen)
    waiting = "; waiting for the shards to index them" if wait and sent else ""
    tell(f"all {report.records} records read and {len(sent)} clips sent in {report.submit_s:.0f} s{waiting}", now=True)
    if wait:
        _wait(sent, report, timeout_s, tell)
    report.wall_s = time.monotonic() - started
    return report


def _submit(
    items: list[tuple[Segment, FeatureRecord]], space: EmbeddingSpace, report: ImportReport, sent: dict[str, str]
) -> None:
    """One batch: catalog rows, vectors to Redis, then an index_clip task per clip on its shard's queue."""
    if not items:
        return
    from echovids import catalog, queues
    from echovids.celery_app import get_celery
    from echovids.jobs import JobStore
    from echovids.queues import TaskName
    from echovids.schemas import ClipEmbedded
    from echovids.settings import get_settings

    shards = get_settings().search_shards
    by_id = {clip_id_for(seg.ytid, seg.start_s): (seg, rec) for seg, rec in items}
    existing = catalog.get_clips(list(by_id))
    todo = []
    with catalog.session() as s:
        for clip_id, (seg, rec) in by_id.items():
            row = existing.get(clip_id)
            if row is not None and row.status in (ClipStatus.ready, ClipStatus.duplicate):
                report.already += 1
                continue
            if row is None:
                s.add(
                    catalog.Clip(
                        id=clip_id,
                        title=f"{seg.labels[0] if seg.labels else 'AudioSet'} ({seg.ytid})",
                        source_kind="youtube",
                        youtube_id=seg.ytid,
                        start_s=seg.start_s,
                        end_s=seg.end_s,
                        duration_s=seg.end_s - seg.start_s,
                        labels=seg.labels,
                        shard=catalog.shard_of(clip_id, shards),
                        status=ClipStatus.pending,
                        space=space.key,
                    )
                )
                shard = catalog.shard_of(clip_id, shards)
            else:
                row_obj = s.get(catalog.Clip, clip_id)
                assert row_obj is not None
                row_obj.status, shard = ClipStatus.pending, row_obj.shard
            todo.append((clip_id, shard, seg, rec))
    store = JobStore()
    celery = get_celery()
    for clip_id, shard, seg, rec in todo:
        frames = to_search_frames(rec.features)
        store.put_arrays(
            clip_id,
            {
                "vectors": frames.astype(np.float16),
                "hashes": np.empty(0, dtype=np.uint32),
                "times": np.empty(0, dtype=np.int32),
            },
        )
        job = store.create(kind="ingest", clip_id=clip_id)
        info = ClipEmbedded(
            clip_id=clip_id,
            space=space,
            n_frames=len(frames),
            duration_s=seg.end_s - seg.start_s,
            content_hash=hashlib.sha256(rec.features.tobytes()).hexdigest(),
            labels=seg.labels,
        )
        celery.send_task(
            TaskName.INDEX_CLIP,
            args=[info.model_dump(mode="json")],
            kwargs={"clip_id": clip_id, "job_id": job.id, "shard": shard},
            queue=queues.shard_queue(shard),
        )
        sent[clip_id] = job.id
    # As submit_clip does: the row names its job once the task is sent, so the library upkeep sees the clip at work
    # (a pending row without a job was never sent, and an AudioSet clip has no stored audio to send it again from).
    with catalog.session() as s:
        for clip_id, *_ in todo:
            row_obj = s.get(catalog.Clip, clip_id)
            if row_obj is not None:
                row_obj.job_id = sent[clip_id]


def _hold_back(in_flight: int) -> None:
    """Send no more while the shards' queues hold ``in_flight`` clips: each waits with its vectors in Redis, and
    reading is faster than indexing, so an import of 200 000 segments used to fill Redis (maxmemory, noeviction:
    every write refused, the shards' too) at about 48 000."""
    from echovids import queues
    from echovids.broker import queued
    from echovids.settings import get_settings

    names = [queues.shard_queue(shard) for shard in range(get_settings().search_shards)]
    while queued(names) >= in_flight:
        time.sleep(0.2)


# Clips read from the catalog at a time while waiting; a pass stops at the first of these reads that finds none
# of its clips settled, as the shards index in about the order the clips were sent.
WAIT_BATCH = 500


class _Progress:
    """Tells ``say`` a line at most every ``every_s``."""

    def __init__(self, say: Callable[[str], None] | None, every_s: float, started: float) -> None:
        self.say, self.every_s, self.started, self.last = say, every_s, started, started

    def __call__(self, line: str, now: bool = False) -> None:
        at = time.monotonic()
        if self.say is not None and (now or at - self.last >= self.every_s):
            self.say(f"[{at - self.started:.0f} s] {line}")
            self.last = at


def _wait(sent: dict[str, str], report: ImportReport, timeout_s: float, tell: _Progress | None = None) -> None:
    """Until every sent clip has settled, or none has for ``timeout_s``: a long import waits for as long as its
    shards keep indexing. A pass reads the clips in the order they were sent up to the first batch the shards
    have not reached (re-reading 200 000 rows five times a second would take a core from them); the last pass
    reads them all."""
    from echovids import catalog

    waiting = list(sent)
    progress_at = time.monotonic()
    while waiting:
        final = time.monotonic() - progress_at > timeout_s
        left: list[str] = []
        for i in range(0, len(waiting), WAIT_BATCH):
            chunk = waiting[i : i + WAIT_BATCH]
            rows = catalog.get_clips(chunk)
            settled = 0
            for clip_id in chunk:
                clip = rows.get(clip_id)
                if clip is None or clip.status == ClipStatus.pending:
                    left.append(clip_id)
                    continue
                settled += 1
                if clip.status in (ClipStatus.ready, ClipStatus.duplicate):
                    report.added += 1
                else:
                    report.failed.append(clip_id)
            if not settled and not final:
                left += waiting[i + WAIT_BATCH :]  # not reached yet
                break
        if final:
            report.failed += left
            return
        if len(left) < len(waiting):
            progress_at = time.monotonic()
        waiting = left
        if tell is not None:
            tell(f"{len(sent) - len(waiting)} of {len(sent)} clips settled ({len(report.failed)} failed)")
        if waiting:
            time.sleep(0.2)
