"""No access token reaches an output or a written file (issue 29, item 1).

The hub is played by a local server that answers 401 and echoes the Authorization header it got,
so the token really leaves (the server sees it) and every place it could come back is searched:
pytest's --tb=long -l output, stderr, the junit XML, the report folder, the CLI's output."""

import http.server
import json
import os
import subprocess
import sys
import threading
import traceback
from pathlib import Path

import pytest
import torch

from flux_perf.model import models
from flux_perf.model.models import ModelSourceError, resolve_model_source
from flux_perf.model.redact import REDACTED, scrub, scrub_report

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_FAKE_SECRET_123"
HUB_MODEL = "hub:black-forest-labs/FLUX.1-Kontext-dev"


class _EchoingHub(http.server.BaseHTTPRequestHandler):
    seen: list = []

    def _reply(self):
        auth = self.headers.get("authorization", "")
        self.seen.append(auth)
        body = json.dumps({"error": f"Invalid credentials in Authorization header: {auth}"}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Error-Message", f"Invalid credentials: {auth}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = _reply

    def log_message(self, *args):
        pass


@pytest.fixture
def echoing_hub():
    _EchoingHub.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EchoingHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", _EchoingHub.seen
    server.shutdown()
    server.server_close()


def _env(tmp_path, endpoint):
    return {**os.environ, "HF_TOKEN": TOKEN, "HUGGING_FACE_HUB_TOKEN": TOKEN, "HF_ENDPOINT": endpoint,
            "HF_HOME": str(tmp_path / "hf-home"), "CI": "",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def _leaks(result, folder: Path) -> list[str]:
    """Every output and written file that holds the token."""
    places = [name for name, text in (("stdout", result.stdout), ("stderr", result.stderr)) if TOKEN in text]
    return places + [str(p) for p in folder.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]


def test_a_hub_failure_under_pytest_long_tracebacks_and_junit_shows_no_token(tmp_path, echoing_hub):
    endpoint, seen = echoing_hub
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/h100/test_pipeline_gpu.py::test_build_is_fast_and_deterministic",
         "-m", "h100", "--flux-device", "cpu", "--flux-model", HUB_MODEL, "--tb=long", "-l",
         f"--junitxml={out / 'junit.xml'}", "--flux-report-dir", str(out / "report"), "-p", "no:cacheprovider"],
        cwd=ROOT, env=_env(tmp_path, endpoint), capture_output=True, text=True, timeout=300,
    )
    assert f"Bearer {TOKEN}" in seen  # the request really carried the token
    assert not _leaks(result, tmp_path)
    assert "1 failed" in result.stdout, result.stdout[-3000:] + result.stderr[-2000:]
    assert "ModelLoadError: cannot load model hub:black-forest-labs/FLUX.1-Kontext-dev" in result.stdout
    assert "401 Unauthorized" in result.stdout and "--flux-model DIR" in result.stdout  # why, and what to do
    assert (out / "junit.xml").is_file()


def test_a_hub_failure_of_flux_perf_run_shows_and_records_no_token(tmp_path, echoing_hub):
    endpoint, seen = echoing_hub
    result = subprocess.run(
        [sys.executable, "-m", "flux_perf", "run", "--model", HUB_MODEL, "--device", "cpu",
         "--scenarios", "64x64@2", "--report-dir", str(tmp_path / "report")],
        cwd=tmp_path, env=_env(tmp_path, endpoint), capture_output=True, text=True, timeout=300,
    )
    assert f"Bearer {TOKEN}" in seen
    assert not _leaks(result, tmp_path)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    record = json.loads((tmp_path / "report" / "results.json").read_text())["records"][0]
    assert record["error"].startswith("ModelLoadError: cannot load model hub:black-forest-labs/FLUX.1-Kontext-dev")


def test_no_hub_and_no_cache_is_one_clear_error_before_any_request(cli, tmp_path, monkeypatch):
    """`.invalid` never resolves: the run stops at the start, naming the model and what to do
    (under pytest the same error is the usage error of the session's start, rc 4)."""
    from diffusers import FluxKontextPipeline
    from huggingface_hub import constants

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(constants, "ENDPOINT", "https://hub.invalid")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr(FluxKontextPipeline, "from_pretrained", None)  # never reached
    import socket

    from flux_perf.model import models

    def no_such_host(host, *args):  # what a resolver answers for .invalid, without asking one (it may hang)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(models.socket, "getaddrinfo", no_such_host)
    result = cli("run", "--model", HUB_MODEL, "--device", "cpu", "--report-dir", tmp_path / "report")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("flux-perf: model hub:black-forest-labs/FLUX.1-Kontext-dev cannot be loaded "
                                    "on this machine: the hub's host hub.invalid does not resolve")
    assert "not in the local hub cache" in result.stderr
    assert "hf download black-forest-labs/FLUX.1-Kontext-dev --local-dir DIR" in result.stderr
    assert TOKEN not in result.stdout + result.stderr


def test_a_failed_load_chains_no_frame_and_names_no_token(monkeypatch):
    """The first defence: the error raised holds no frame of the library (whose locals carry the
    request headers) and its message is scrubbed."""
    from diffusers import FluxKontextPipeline

    from flux_perf.model.pipeline import ModelLoadError, build_pipeline

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(models, "hub_cached", lambda repo: False)
    monkeypatch.setattr(models, "hub_unreachable", lambda: None)

    def from_pretrained(location, **kwargs):
        headers = {"authorization": f"Bearer {TOKEN}"}  # noqa: F841 - what huggingface_hub's frames hold
        try:
            raise ConnectionError(f"refused with {headers}")
        except ConnectionError as error:
            raise OSError(f"Cannot load model {location}: token {TOKEN}") from error

    monkeypatch.setattr(FluxKontextPipeline, "from_pretrained", from_pretrained)
    with pytest.raises(ModelLoadError) as caught:
        build_pipeline(resolve_model_source(HUB_MODEL, "cpu"), "cpu", torch.float32)
    error = caught.value
    assert error.__cause__ is None and error.__context__ is None
    assert isinstance(error, ModelSourceError)  # the CLI prints it as one line
    text = "".join(traceback.format_exception(error))
    assert TOKEN not in text and "caused by ConnectionError: refused with {'authorization': 'Bearer <redacted>'}" in text
    assert "hf download black-forest-labs/FLUX.1-Kontext-dev --local-dir DIR" in text


@pytest.mark.parametrize("text, expected", [
    (f"headers = {{'authorization': 'Bearer {TOKEN}', 'user-agent': 'hf_hub/2.4.0'}}",
     f"headers = {{'authorization': 'Bearer {REDACTED}', 'user-agent': 'hf_hub/2.4.0'}}"),
    ("token='hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789'", f"token='{REDACTED}'"),
    ("Authorization: bearer abc.def-ghi", f"Authorization: bearer {REDACTED}"),
    ("hf_hub_download and hf_transfer stay", "hf_hub_download and hf_transfer stay"),
])
def test_scrub_removes_tokens_and_keeps_library_names(text, expected, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    assert scrub(text) == expected


def test_scrub_knows_the_environments_and_the_token_files_values(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", "plain-secret-1")  # no hf_ prefix: only its value can find it
    (tmp_path / "token").write_text("plain-secret-2\n")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    assert scrub("a plain-secret-1 b plain-secret-2") == f"a {REDACTED} b {REDACTED}"


def test_a_pytest_report_with_a_token_is_scrubbed(monkeypatch):
    """The second defence (plugin/__init__.py, for flux-perf's runs): the long traceback with locals
    and the captured output, which the terminal prints and --junitxml writes."""
    from _pytest.reports import TestReport

    monkeypatch.setenv("HF_TOKEN", TOKEN)

    def fails():
        headers = {"authorization": f"Bearer {TOKEN}"}  # noqa: F841 - shown by -l
        raise OSError("hub refused")

    with pytest.raises(OSError) as caught:
        fails()
    longrepr = caught.getrepr(style="long", showlocals=True)
    assert TOKEN in str(longrepr)
    report = TestReport("t.py::test", ("t.py", 1, "test"), {}, "failed", longrepr, "call",
                        sections=[("Captured stderr call", f"sent Bearer {TOKEN}")])
    scrub_report(report)
    assert TOKEN not in str(report.longrepr) and "hub refused" in str(report.longrepr)
    assert TOKEN not in report.longreprtext and report.sections == [("Captured stderr call", f"sent Bearer {REDACTED}")]


def test_a_report_reads_the_token_file_once_and_a_token_written_later_is_still_found(monkeypatch, tmp_path):
    """One read of the tokens per report, not one per piece of it; the next report reads afresh."""
    from _pytest.reports import TestReport

    from flux_perf.model import redact

    monkeypatch.setenv("HF_HOME", str(tmp_path))
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    reads, real = [], redact.known_tokens
    monkeypatch.setattr(redact, "known_tokens", lambda: reads.append(1) or real())

    def report():
        return TestReport("t.py::test", ("t.py", 1, "test"), {}, "failed", "OSError: sent plain-secret-9", "call",
                          sections=[("Captured stdout call", "a plain-secret-9"), ("Captured stderr call", "b")])

    before = report()
    scrub_report(before)
    assert reads == [1] and "plain-secret-9" in str(before.longrepr)  # no token file yet: nothing to hide
    (tmp_path / "token").write_text("plain-secret-9\n")  # a login while the run goes on
    after = report()
    scrub_report(after)
    assert reads == [1, 1]
    assert str(after.longrepr) == f"OSError: sent {REDACTED}"
    assert after.sections == [("Captured stdout call", f"a {REDACTED}"), ("Captured stderr call", "b")]
