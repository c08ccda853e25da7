"""`spinbot run --watch` on local storage: it names the live playlists, which are there to play as the job runs."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from spinbot.cli import app
from spinbot.media.segments import ENDLIST
from spinbot.samples import portrait_path, voice_path


def test_run_watch_prints_the_live_playlists_paths(tmp_path: Path, spinbot_env, use_settings):
    use_settings(talk_max_pixels=160 * 160)
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--prompt",
            "the sea",
            "--image",
            str(portrait_path(tmp_path)),
            "--voice",
            str(voice_path()),
            "--set",
            "script.text=Ever tried. Ever failed.",
            "--set",
            "infinite_talk.frame_window_size=20",
            "--set",
            "infinite_talk.motion_frame=4",
            "--out",
            str(tmp_path / "out.mp4"),
            "--watch",
        ],
    )
    assert result.exit_code == 0, result.output
    places = dict(re.findall(r"^live (\w+): (\S+) \(a file on local storage", result.output, flags=re.MULTILINE))
    assert list(places) == ["infinite_talk", "upscale_video"]
    job_id = re.search(r"^job ([0-9a-f]{32})$", result.output, flags=re.MULTILINE).group(1)
    for node, place in places.items():
        playlist = Path(place)
        assert playlist == (spinbot_env / "jobs" / job_id / node / "live" / "index.m3u8").resolve()
        text = playlist.read_text()
        segments = re.findall(r"^seg-\d{5}\.ts$", text, flags=re.MULTILINE)
        assert segments and text.rstrip().endswith(ENDLIST)
        assert all((playlist.parent / name).is_file() for name in segments)
    assert (tmp_path / "out.mp4").is_file()
