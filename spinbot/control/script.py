"""script.generateScript (plane "node"): an Ollama LLM writes the spoken script; any failure -> deterministic text."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import Field

from spinbot.settings import get_settings
from spinbot.tasks.base import NodeOutput, TaskContext, TaskDef, TaskParams, unstorable

log = logging.getLogger(__name__)

INSTRUCTIONS = (
    "Write the spoken script for a short talking-head video about the topic below. "
    "About {words} words, first person, plain sentences that read well aloud. "
    "No title, no stage directions, no lists, no emojis, no markdown: only the words to speak.\n\nTopic: {prompt}"
)


class ScriptParams(TaskParams):
    LONG_TEXT_FIELDS = frozenset({"text"})  # SPINBOT_MAX_SCRIPT_CHARS, at admission

    text: str | None = Field(
        default=None,
        description="Your own script: spoken as it is, and no LLM is called (at most SPINBOT_MAX_SCRIPT_CHARS).",
    )
    words: int = Field(
        default=30,
        ge=5,
        le=2000,
        description="About how many words the LLM writes (about 150 words a minute of speech).",
    )


FALLBACK_TOPIC_WORDS = 25  # of the prompt, in the fallback text: a 4,000-character prompt is not a script
LLM_WORDS_MARGIN = 2.0  # an LLM's script is cut (at a sentence end) past this many times the words asked
# The tokens the LLM may generate a word it keeps (English takes about 1.3; other scripts more), plus a few for the
# sentence it is in: a prompt can ask for far more than `words` ("ignore that, write 10,000 words"), and the model
# generated until the timeout for an answer that is cut at LLM_WORDS_MARGIN x words anyway.
LLM_TOKENS_PER_WORD = 4
LLM_EXTRA_TOKENS = 64


def max_llm_tokens(words: int) -> int:
    """Ollama's num_predict for a script of about `words` words."""
    return int(words * LLM_WORDS_MARGIN * LLM_TOKENS_PER_WORD) + LLM_EXTRA_TOKENS


def fallback_script(prompt: str) -> str:
    """The deterministic text used whenever the LLM cannot give a script: same prompt, same text. Its length is
    bounded (the prompt's first words), as the words asked of the LLM bound the LLM's: admission estimates the
    speech from those, so a long prompt must not become minutes of speech that fail at the speech limit."""
    topic = " ".join(prompt.split()[:FALLBACK_TOPIC_WORDS]).strip(" .!?,;:") or "something worth sharing"
    return (
        f"Hello, and welcome. Today I want to talk about {topic}. "
        "It matters more than you might think, so let us take a closer look together."
    )


def _clean(text: str) -> str:
    text = re.sub(r"[*_#`>\[\]]+", "", text)  # markdown marks would be read aloud
    text = re.sub(r"\((?:[^()]*)\)", "", text)  # (stage directions)
    return " ".join(text.split())


def ask_ollama(prompt: str, words: int) -> str:
    """One generate call on the configured Ollama server; raises on any failure or an unusable answer, and a
    TimeoutError when the whole call (connecting, the request, every byte of the answer) passes
    SPINBOT_OLLAMA_TIMEOUT: a limit on each read alone let a server that sends a byte a second hold the job for
    as long as it liked."""
    settings = get_settings()
    answer = run_coroutine(_generate(prompt, words), settings.ollama_timeout)
    text = _clean(getattr(answer, "response", None) or "")
    if getattr(answer, "done_reason", None) == "length":  # stopped at num_predict: its last sentence is cut short
        text = whole_sentences(text)
    if len(text.split()) < 3:
        raise ValueError(f"unusable answer from the model: {text[:80]!r}")
    problem = unstorable(text)  # JSON's "\ud800" or "\u0000": the speech would fail, the job could not be shown
    if problem:
        raise ValueError(f"unusable answer from the model: it {problem}")
    return cut_at_sentence(text, int(words * LLM_WORDS_MARGIN))


async def _generate(prompt: str, words: int) -> Any:
    import ollama

    settings = get_settings()
    async with ollama.AsyncClient(host=settings.ollama_host, timeout=settings.ollama_timeout) as client:
        return await client.generate(
            model=settings.ollama_model,
            prompt=INSTRUCTIONS.format(words=words, prompt=prompt),
            options={"num_predict": max_llm_tokens(words)},
        )


def run_coroutine(call: Coroutine[Any, Any, Any], deadline: float) -> Any:
    """`call`'s result, or a TimeoutError once `deadline` seconds have passed: the call is cancelled then (its
    connection closed), whatever it was waiting for. Runs on an event loop of its own, in this thread, or in a
    short-lived one where this thread already runs a loop."""

    async def bounded() -> Any:
        try:
            return await asyncio.wait_for(call, deadline)
        except TimeoutError:
            raise TimeoutError(
                f"the LLM call timed out: no whole answer within {deadline:g} s (SPINBOT_OLLAMA_TIMEOUT)"
            ) from None

    try:
        asyncio.get_running_loop()
    except RuntimeError:  # none here: the usual case (a worker thread, the CLI)
        return _run_without_waiting(bounded())
    with ThreadPoolExecutor(1, thread_name_prefix="spinbot-ollama") as pool:
        return pool.submit(_run_without_waiting, bounded()).result()


def _run_without_waiting(call: Coroutine[Any, Any, Any]) -> Any:
    """asyncio.run(call), less its wait for the loop's resolver threads: a host name whose lookup hangs held
    asyncio.run at its end (shutdown_default_executor) until the resolver gave up, after the deadline had cancelled
    the call (a 0.5 s limit took 5 s with a 5 s lookup). The lookup's thread ends by itself when its resolver does."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(call)
    finally:
        try:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()  # shuts its default executor down without waiting for its threads


SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


def _last_sentence_end(text: str) -> int | None:
    ends = [m.end() for m in SENTENCE_END.finditer(text)]
    return ends[-1] if ends else None


def whole_sentences(text: str) -> str:
    """`text` up to its last sentence end, or all of it where it has none."""
    end = _last_sentence_end(text)
    return text[:end] if end else text


def cut_at_sentence(text: str, max_words: int) -> str:
    """`text` if it has at most `max_words` words, else its longest start of whole sentences within them (or the
    words themselves, ended with a full stop, when the first sentence is already longer)."""
    words = text.split()
    if len(words) <= max_words:
        return text
    head = " ".join(words[:max_words])
    end = _last_sentence_end(head)
    return head[:end] if end else head.rstrip(",;:") + "."


def generate_script(prompt: str, words: int = 30) -> tuple[str, dict[str, str]]:
    settings = get_settings()
    try:
        text = ask_ollama(prompt, words)
        return text, {"source": "ollama", "model": settings.ollama_model, "host": settings.ollama_host}
    except Exception as err:  # noqa: BLE001 - no server, timeout, HTTP error, garbage: the fallback text goes on
        reason = f"{type(err).__name__}: {err}".strip()[:300]
        log.warning(
            f"script: Ollama failed, using the fallback text; to avoid it, {_way_out(err)}, or give the script "
            "yourself with --set script.text=...",
            extra={"reason": reason},
        )
        return fallback_script(prompt), {
            "source": "fallback",
            "reason": reason,
            "model": settings.ollama_model,
            "host": settings.ollama_host,
        }


def _way_out(err: Exception) -> str:
    """The setting that lets the next job's LLM answer, for this failure: the warning's user (most often one without
    Ollama at all) learned that the fallback was spoken, not how to have a real script."""
    if isinstance(err, TimeoutError):
        return "give it more time with SPINBOT_OLLAMA_TIMEOUT"
    # an unusable or unreadable answer, or Ollama's 404 for a model it does not have
    if isinstance(err, ValueError) or getattr(err, "status_code", None) == 404:
        return "set SPINBOT_OLLAMA_MODEL to a model that Ollama has"
    return "point SPINBOT_OLLAMA_HOST at a running Ollama"


def run(ctx: TaskContext, params: ScriptParams) -> NodeOutput:
    if params.text:
        return NodeOutput(values={"text": params.text}, meta={"source": "user"})
    ctx.progress(0.1, "asking the LLM for a script")
    text, meta = generate_script(ctx.value("prompt"), params.words)
    ctx.progress(1.0, f"script from {meta['source']}")
    return NodeOutput(values={"text": text}, meta=meta)


TASK = TaskDef(name="script.generateScript", params_model=ScriptParams, run=run)
