"""Events as JSON lines: one line each time a track is scored, written as it happens."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import threading
from pathlib import Path
from typing import IO, Any

from facialattr.errors import OutputError
from facialattr.files import open_append, output_failure


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
    """Appends one JSON object per line to a file, or to stdout for ``-``; flushed per line.

    A new events file is private (0600); an existing one is appended to only when it is this
    user's regular file, and a symbolic link at the name is refused (facialattr/files.py).
    """

    def __init__(self, target: str | Path) -> None:
        self._lock = threading.Lock()
        self.count = 0
        self.target = str(target)
        if self.target == "-":
            self._file: IO[str] = sys.stdout
            self._owned = False
        else:
            if self.target in ("/dev/stdout", "/dev/fd/1") and os.path.islink(target):
                raise OutputError(f"{target} is a symbolic link, which facialattr does not write through: "
                                  "--events - sends events to stdout")
            fd = open_append(target, devices_ok=True)  # devices: /dev/null (only root can make a device)
            self._file = open(fd, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
            self._owned = True

    def write(self, event: dict[str, Any]) -> None:
        """Append ``event`` as one JSON line and flush it (thread-safe); OutputError when the file cannot take it."""
        line = json.dumps(event, separators=(",", ":"))
        with self._lock:
            try:
                self._file.write(line + "\n")
                self._file.flush()
            except OSError as exc:
                if not self._owned:  # stdout: a closed pipe is the caller's to handle
                    raise
                # The descriptor closed underneath: close() then does not flush into the full disk again.
                self._file.buffer.raw.close()
                raise output_failure(self.target, exc, what="events") from None
            self.count += 1

    def close(self) -> None:
        """Close the file (stdout stays open)."""
        if self._owned:
            self._file.close()

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
