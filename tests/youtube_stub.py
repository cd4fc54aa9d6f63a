"""A stand-in for YouTube on a real socket: oEmbed and videos.list, answering from per-video scripts."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qs, urlparse

ONTOLOGY = Path(__file__).resolve().parents[2] / "shared" / "data" / "audioset_ontology.json"


def audioset_video_ids() -> list[str]:
    """YouTube ids of the ontology's positive examples (`youtu.be/ID?start=..`), in file order, unique."""
    nodes = json.loads(ONTOLOGY.read_text())
    links = [link for node in nodes for link in node.get("positive_examples", [])]
    return list(dict.fromkeys(urlparse("https://" + link).path.strip("/") for link in links))


@dataclass(frozen=True)
class Reply:
    status: int = 200
    delay_s: float = 0.0


class YouTubeStub:
    """Each video answers its script one reply per call (the last one repeats); unscripted videos answer 200."""

    def __init__(self) -> None:
        self._scripts: dict[str, list[Reply]] = {}
        self._lock = threading.Lock()
        self.calls: list[tuple[float, str]] = []  # (monotonic time, video id or comma-joined ids)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def oembed_url(self) -> str:
        return f"{self.base}/oembed"

    @property
    def api_url(self) -> str:
        return f"{self.base}/youtube/v3"

    def script(self, video_id: str, *replies: Reply | int) -> None:
        """What the video answers, call after call."""
        with self._lock:
            self._scripts[video_id] = [r if isinstance(r, Reply) else Reply(r) for r in replies]

    def calls_for(self, video_id: str) -> int:
        with self._lock:
            return sum(video_id in ids.split(",") for _, ids in self.calls)

    def _next(self, video_id: str) -> Reply:
        with self._lock:
            script = self._scripts.get(video_id)
            if not script:
                return Reply()
            return script.pop(0) if len(script) > 1 else script[0]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                url = urlparse(self.path)
                query = parse_qs(url.query)
                if url.path == "/oembed":
                    video_id = parse_qs(urlparse(query["url"][0]).query)["v"][0]
                    status, body = stub._oembed(video_id)
                elif url.path == "/youtube/v3/videos":
                    status, body = stub._videos_list(query["id"][0].split(","))
                else:
                    status, body = 404, {}
                payload = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    if status == 429:
                        self.send_header("Retry-After", "1")
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up on a slow answer

        return Handler

    def _record(self, ids: str) -> None:
        with self._lock:
            self.calls.append((time.monotonic(), ids))

    def _oembed(self, video_id: str) -> tuple[int, dict[str, object]]:
        self._record(video_id)
        reply = self._next(video_id)
        time.sleep(reply.delay_s)
        if reply.status != 200:
            return reply.status, {}
        return 200, {"type": "video", "title": f"video {video_id}", "provider_name": "YouTube"}

    def _videos_list(self, video_ids: list[str]) -> tuple[int, dict[str, object]]:
        self._record(",".join(video_ids))
        replies = {vid: self._next(vid) for vid in video_ids}
        time.sleep(max(r.delay_s for r in replies.values()))
        failing = [r.status for r in replies.values() if r.status == 429 or r.status >= 500]
        if failing:
            return failing[0], {"error": {"code": failing[0]}}
        items = [
            {
                "id": vid,
                "status": {
                    "uploadStatus": "processed",
                    "privacyStatus": "public",
                    "embeddable": reply.status not in (401, 403),
                },
            }
            for vid, reply in replies.items()
            if reply.status != 404
        ]
        return 200, {"kind": "youtube#videoListResponse", "items": items}

    def __enter__(self) -> YouTubeStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
