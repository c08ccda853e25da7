"""Face detection shared by jobs running at once in one process (threads of the API server or a worker)."""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np

from spinbot.media.faces import face_candidates
from spinbot.media.image import load_image
from spinbot.samples import portrait_path
from spinbot.settings import get_settings


def test_threads_detecting_at_once_find_what_one_thread_finds(tmp_path: Path):
    """One CascadeClassifier shared by threads gave other threads' results (11 of 405 here) or raised OpenCV's
    getScaleData assertion; each thread now has its own."""
    portrait = load_image(portrait_path(tmp_path), get_settings().max_image_pixels)
    rng = np.random.default_rng(0)
    noisy = [np.clip(portrait + rng.integers(-20, 20, portrait.shape), 0, 255).astype(np.uint8) for _ in range(4)]
    images = noisy + [cv2.resize(portrait, (side, side)) for side in (200, 300, 700)]
    expected = [face_candidates(image) for image in images]
    assert any(expected)  # the astronaut's face is found: a race would change something
    results: list[bool] = []
    errors: list[BaseException] = []

    def detect() -> None:
        try:
            for _ in range(12):
                results.extend(face_candidates(image) == want for image, want in zip(images, expected))
        except BaseException as err:  # noqa: BLE001 - an OpenCV assertion in a thread is the failure looked for
            errors.append(err)

    threads = [threading.Thread(target=detect) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(results) == 3 * 12 * len(images) and all(results)
