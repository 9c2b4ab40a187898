"""Access tokens never reach an output: what flux-perf prints, records or lets pytest write.

The first defence is that no token is ever in a frame flux-perf shows (the hub is asked only when
reachable, and a failed load is re-raised clean: pipeline.py). This is the second: text that goes
out is scrubbed of the tokens this process can see (HF_TOKEN, HUGGING_FACE_HUB_TOKEN, the token
file huggingface_hub reads) and of anything shaped like one ('Bearer ...', 'hf_...').
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from pathlib import Path

TOKEN_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
REDACTED = "<redacted>"
# A value this short would blank ordinary words: shorter "tokens" are left to the patterns.
_MIN_TOKEN = 8
_PATTERNS = (
    re.compile(r"(?i)(\bbearer\s+)[^\s'\",;})\]]+"),
    # Hub tokens are hf_ and mixed-case letters and digits; library names (hf_hub_download,
    # hf_transfer) are lowercase words and stay.
    re.compile(r"\bhf_(?=[A-Za-z0-9_]*[A-Z0-9])[A-Za-z0-9_]{6,}"),
)


def _token_file() -> Path:
    if os.environ.get("HF_TOKEN_PATH"):
        return Path(os.environ["HF_TOKEN_PATH"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "huggingface"
    return Path(home).expanduser() / "token"


def known_tokens() -> list[str]:
    """The token values this process could send: the environment's and huggingface_hub's file."""
    values = [os.environ.get(name, "") for name in TOKEN_VARIABLES]
    try:
        values.append(_token_file().read_text(errors="replace")[:4096])
    except OSError:
        pass  # no token file: nothing to hide
    return sorted({v.strip() for v in values if len(v.strip()) >= _MIN_TOKEN}, key=len, reverse=True)


def scrub(text: str, tokens: list[str] | None = None) -> str:
    """`text` with every token replaced by <redacted> (`tokens`: known_tokens(), if read already)."""
    for token in known_tokens() if tokens is None else tokens:
        text = text.replace(token, REDACTED)
    text = _PATTERNS[0].sub(lambda m: m[1] + REDACTED, text)
    return _PATTERNS[1].sub(REDACTED, text)


@contextlib.contextmanager
def scrubbed_logging():
    """Log records made meanwhile are scrubbed before any handler sees them: diffusers logs
    "Couldn't connect to the Hub: <the server's answer>", and an answer may quote the header."""
    previous, tokens = logging.getLogRecordFactory(), known_tokens()

    def factory(*args, **kwargs):
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is the logging module's to report
            return record
        scrubbed = scrub(message, tokens)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return record

    logging.setLogRecordFactory(factory)
    try:
        yield
    finally:
        logging.setLogRecordFactory(previous)


def scrub_report(report) -> None:
    """A pytest report with its traceback (locals included) and captured output scrubbed. The
    traceback becomes plain text only where it held a token, so other reports keep their form."""
    # Read once per report, not per piece: each report reads afresh, so a token written meanwhile is found.
    tokens = known_tokens()
    longrepr = report.longrepr
    if isinstance(longrepr, tuple):  # a skip: (path, line, reason)
        report.longrepr = (*longrepr[:2], scrub(str(longrepr[2]), tokens))
    elif longrepr is not None:
        text = str(longrepr)
        scrubbed = scrub(text, tokens)
        if scrubbed != text:
            report.longrepr = scrubbed
    report.sections = [(title, scrub(content, tokens)) for title, content in report.sections]
