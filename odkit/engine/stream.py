"""Streaming inputs for prediction: a bounded prefetching map (decode and resize in threads beside the
network), batching, and video / camera / stream frames (OpenCV's ``VideoCapture``)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from pathlib import Path
from typing import TypeVar

import numpy as np

from odkit.errors import DataError

T = TypeVar("T")
R = TypeVar("R")

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts"}


def prefetch(items: Iterable[T], fn: Callable[[T], R], workers: int = 2, depth: int = 16) -> Iterator[R]:
    """``fn(item)`` for every item, in order, computed by ``workers`` threads at most ``depth`` items
    ahead of the consumer (bounded memory whatever the number of items). ``workers`` 0: inline.
    OpenCV's decoding and resizing release the GIL, so the threads overlap with the network."""
    if workers <= 0:
        yield from (fn(x) for x in items)
        return
    it = iter(items)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="odkit-prefetch") as pool:
        pending = deque(pool.submit(fn, x) for x in islice(it, depth))
        while pending:
            done = pending.popleft().result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(fn, nxt))
            yield done


def batched(items: Iterable[T], n: int) -> Iterator[list[T]]:
    """Consecutive lists of ``n`` items (the last one shorter)."""
    it = iter(items)
    while chunk := list(islice(it, n)):
        yield chunk


def is_video_source(source: str | Path) -> bool:
    """Whether ``--source`` names a video file, a camera index (``0``, ``1``, ...) or a stream URL."""
    s = str(source)
    return s.isdigit() or "://" in s or Path(s).suffix.lower() in VIDEO_SUFFIXES


class VideoSource:
    """Frames of a video file, a camera (``"0"``) or a stream URL as RGB ``uint8 [H, W, 3]``.

    ``fps`` is the source's frame rate (25 when it does not say), ``frame_count`` the number of frames
    a file declares (0 for cameras and streams), ``size`` ``(width, height)``. Iterating yields
    ``(frame_index, image)`` for every ``stride``-th frame. ``stopped_early`` tells afterwards whether
    the source ended before its declared length (a file) or at all (a camera / stream): the frames
    read until then were yielded.
    """

    def __init__(self, source: str | Path, stride: int = 1) -> None:
        import cv2

        self.source = str(source)
        self.stride = max(int(stride), 1)
        self.live = self.source.isdigit() or "://" in self.source
        if not self.live and not Path(self.source).is_file():
            raise DataError(f"--source {self.source}: video file does not exist")
        self.cap = cv2.VideoCapture(int(self.source) if self.source.isdigit() else self.source)
        ok = self.cap.isOpened()
        first = self.cap.read() if ok else (False, None)
        if not ok or not first[0]:
            self.cap.release()
            raise DataError(f"--source {self.source}: cannot read it as a video "
                            f"({'no frame could be decoded' if ok else 'OpenCV cannot open it'})")
        self._first = first[1]
        fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0.0 < fps < 1000.0 else 25.0
        self.frame_count = 0 if self.live else max(int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0), 0)
        self.size = (int(self._first.shape[1]), int(self._first.shape[0]))
        self.frames_read = 0
        self.stopped_early = False

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        import cv2

        frame = self._first
        index = 0
        try:
            while frame is not None:
                self.frames_read = index + 1
                if index % self.stride == 0:
                    yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                ok, frame = self.cap.read()
                if not ok:
                    frame = None
                index += 1
        finally:
            self.cap.release()
        # a camera or stream never ends by itself; a file that ends before its declared length was cut
        self.stopped_early = self.live or (self.frame_count > 0 and self.frames_read < self.frame_count - 1)


class VideoWriter:
    """Annotated frames (RGB ``uint8``) into ``path`` (mp4v) at ``fps``; ``close()`` finalises the file
    so that what was written stays playable when the source stops."""

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int]) -> None:
        import cv2

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), size)
        if not self.writer.isOpened():
            raise DataError(f"{self.path}: OpenCV cannot write an mp4v video here")
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        import cv2

        self.writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        self.writer.release()
