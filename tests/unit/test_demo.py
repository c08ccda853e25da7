"""`spinbot demo` end to end on embedded defaults: a talking portrait, 2x upscaled, with the synthesized voice."""

import os
import subprocess
import sys
from pathlib import Path

import cv2

from spinbot.media.image import fit_size
from spinbot.media.video import probe, read_audio
from spinbot.samples import portrait_path


def test_demo_writes_a_2x_talking_video_with_matching_audio(tmp_path: Path, spinbot_env):
    env = dict(os.environ)
    result = subprocess.run(
        [sys.executable, "-m", "spinbot", "demo"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = tmp_path / "spinbot-out" / "demo.mp4"
    assert result.stdout.strip() == "spinbot-out/demo.mp4" and out.is_file()

    info = probe(out)
    src_h, src_w = cv2.imread(str(portrait_path(tmp_path))).shape[:2]
    talk_w, talk_h = fit_size(src_w, src_h, 832 * 480)
    assert (info.width, info.height) == (2 * talk_w, 2 * talk_h)
    assert info.fps == 25 and info.frames > 5 * 25  # seconds of speech, at 25 fps
    assert abs(info.audio_duration - info.duration) <= 1 / info.fps
    audio, _ = read_audio(out)
    assert audio.std() > 0.01  # the voice is there, not silence
