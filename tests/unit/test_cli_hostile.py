"""The CLI given hostile values (a probe of 2026-12-05): each got a traceback, or an error line that was not one
line or that wrote terminal control sequences; each test fails on the code before its fix."""

from __future__ import annotations

import re

import pytest

from spinbot.samples import portrait_path, voice_path
from tests.support.cli import made_database, run_cli, stored_job_files

# What no error line may hold: control characters (C0, DEL, C1) and bidi overrides / isolates
UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


@pytest.fixture
def new_job(tmp_path, spinbot_env) -> list[str]:
    return ["run", "--prompt", "hello", "--image", str(portrait_path(tmp_path)), "--voice", str(voice_path())]


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--set", "a\nb"], "--set expects NODE.PARAM=VALUE, got 'a\\nb'"),
        (["--set", "evil\x1b[2J.x=1"], "evil\\x1b[2J: no such node"),
        (["--set", "infinite_talk.x\x1b]0;owned\x07=1"], "infinite_talk.x\\x1b]0;owned\\x07: unknown param"),
        (["--set", "script.x\u202egnp.exe=1"], "script.x\\u202egnp.exe: unknown param"),
    ],
    ids=["newline", "csi", "osc-title", "bidi-override"],
)
def test_control_characters_an_error_quotes_are_escaped_on_its_one_line(new_job, spinbot_env, args, expected):
    code, lines = run_cli(*new_job, *args)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("error: ") and expected in lines[0]
    assert not UNPRINTABLE.search(lines[0])
    assert stored_job_files(spinbot_env) == []


@pytest.mark.parametrize("command", [["cancel"], ["run", "--resume"], ["params"], ["pipelines", "show"]])
def test_a_hostile_id_or_name_is_one_inert_line(spinbot_env, command):
    made_database()  # a job id is looked up (and quoted) where there are jobs
    code, lines = run_cli(*command, "abc\x1b[2J\r\nrm -rf")
    assert code == 2 and len(lines) == 1, lines
    assert "abc\\x1b[2J\\r\\nrm -rf" in lines[0] and not UNPRINTABLE.search(lines[0])


@pytest.mark.parametrize("priority", ["99999999999999999999", "2097153"])
def test_a_priority_past_the_queue_range_is_a_usage_line_and_nothing_is_stored(new_job, spinbot_env, priority):
    # 10^20 was SQLite's OverflowError traceback; 2097153 was stored, then refused by BullMQ with a worker
    code, lines = run_cli(*new_job, "--priority", priority)
    assert (code, lines) == (
        2,
        [
            "error: invalid value for '--priority': Input should be less than or equal to 2097152 "
            "(see 'root run --help')"
        ],
    )
    assert stored_job_files(spinbot_env) == []


@pytest.mark.parametrize("days", ["1e309", "99999999999"])
def test_gc_older_than_past_a_century_is_a_usage_line(spinbot_env, days):
    # an OverflowError traceback: timedelta(days=inf), a date before year 1
    code, lines = run_cli("gc", "--older-than", days)
    assert code == 2 and lines == [
        "error: invalid value for '--older-than': Input should be less than or equal to 36500 (see 'root gc --help')"
    ]


@pytest.mark.parametrize(
    "setting, value, command, refused",
    [
        ("JOB_RETENTION_DAYS", "inf", ["gc"], "Input should be a finite number"),
        ("JOB_RETENTION_DAYS", "1e9", ["gc"], "Input should be less than or equal to 36500"),
        (
            "JOB_LEASE_SECONDS",
            "1e300",
            ["run", "--set", "script.text=Hi."],
            "Input should be less than or equal to 86400",
        ),
        ("JOB_LEASE_SECONDS", "inf", ["run", "--set", "script.text=Hi."], "Input should be a finite number"),
        ("MAX_SPEECH_SECONDS", "nan", ["gc"], "Input should be a finite number"),
    ],
)
def test_a_time_setting_that_overflows_a_clock_is_one_line_naming_it(
    spinbot_env, use_settings, tmp_path, setting, value, command, refused
):
    # each was an OverflowError traceback (the lease's after the job was stored)
    use_settings(**{setting.lower(): value})
    inputs = ["--image", str(portrait_path(tmp_path)), "--voice", str(voice_path())] if command[0] == "run" else []
    code, lines = run_cli(*command, *inputs)
    assert code == 2 and lines == [f"error: SPINBOT_{setting}='{value}' refused: {refused}"], lines
    assert stored_job_files(spinbot_env) == []


def test_a_window_a_frame_for_minutes_of_speech_is_one_line_and_nothing_is_stored(new_job, spinbot_env):
    windows = ["--set", "infinite_talk.frame_window_size=2", "--set", "infinite_talk.motion_frame=1"]
    code, lines = run_cli(*new_job, "--set", "script.words=700", *windows)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("error: infinite_talk: frame_window_size 2 with motion_frame 1 makes 6,999 windows")
    assert stored_job_files(spinbot_env) == []
