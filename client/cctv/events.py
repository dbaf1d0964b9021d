"""Events as JSON lines: one line each time a track is scored, written as it happens."""

from __future__ import annotations

import datetime as dt
import json
import sys
import threading
from pathlib import Path
from typing import IO, Any

from facialattr.errors import InputError


def track_event(*, time_s: float, camera: str, frame_index: int, track_id: int, box_xyxy, times_scored: int,
                top: list, recommendations: list) -> dict[str, Any]:
    """One JSON-ready event of a track: UTC ``time`` from ``time_s`` (epoch seconds), box in pixels, top-10, recommendations."""
    return {
        "time": dt.datetime.fromtimestamp(time_s, dt.UTC).isoformat(timespec="milliseconds"),
        "camera": camera,
        "frame": frame_index,
        "track_id": track_id,
        "box_xyxy": [int(v) for v in box_xyxy],
        "times_scored": times_scored,
        "top10": [{"name": a.name, "probability": round(a.probability, 4), "present": a.present} for a in top],
        "recommendations": [r.to_json() for r in recommendations],
    }


class EventWriter:
    """Appends one JSON object per line to a file, or to stdout for ``-``; flushed per line."""

    def __init__(self, target: str | Path) -> None:
        self._lock = threading.Lock()
        self.count = 0
        if str(target) == "-":
            self._file: IO[str] = sys.stdout
            self._owned = False
        else:
            try:
                self._file = open(target, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
            except OSError as exc:
                raise InputError(f"{target}: cannot write events: {exc}") from exc
            self._owned = True

    def write(self, event: dict[str, Any]) -> None:
        """Append ``event`` as one JSON line and flush it (thread-safe)."""
        line = json.dumps(event, separators=(",", ":"))
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()
            self.count += 1

    def close(self) -> None:
        """Close the file (stdout stays open)."""
        if self._owned:
            self._file.close()

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
