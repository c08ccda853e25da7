"""How long the speech of a script will be, and the limit on it (SPINBOT_MAX_SPEECH_SECONDS).

The speech sets the length of everything after it (the talking-head video has one frame per 1/fps s of speech,
the upscale as many), so one limit on it bounds the whole job. A job is refused at submission when the estimate
from its text is over the limit; the f5_to_tts task checks the estimate again on the final script (an LLM may write
more than it was asked for) and the length of what it actually spoke.
"""

from __future__ import annotations

from spinbot.errors import InputError

# A brisk reading pace: 15 characters a second is about 170 words a minute, and most narrators are slower. So the
# estimate is a lower bound, and only a script that surely runs past the limit is refused before it is spoken.
CHARS_PER_SECOND = 15.0
CHARS_PER_WORD = 6.0  # an English word and the space after it, on average
LIMIT_SETTING = "SPINBOT_MAX_SPEECH_SECONDS"


class SpeechTooLong(InputError):
    """The speech a job would produce (or produced) is over the limit."""


def estimate_seconds(chars: float, speed: float = 1.0) -> float:
    """Seconds of speech for `chars` characters of script at `speed` (the f5_to_tts param, 1 = natural pace)."""
    return chars / (CHARS_PER_SECOND * speed)


def words_to_chars(words: int) -> float:
    return words * CHARS_PER_WORD


def refuse_over_limit(seconds: float, limit: float, what: str, *, estimated: bool = True) -> None:
    """One line naming what is too long, by how much, and the limit."""
    if seconds > limit:
        amount = f"about {seconds:.0f} s" if estimated else f"{seconds:.1f} s"
        raise SpeechTooLong(f"{what}: {amount} of speech, over the limit of {limit:g} s ({LIMIT_SETTING})")
