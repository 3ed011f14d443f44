"""The command line, run as a subprocess (`python -m backend …`) against a live server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from PIL import Image

from backend.embedded_pg import free_port
from backend.providers import PermanentProviderError
from tests.conftest import LiveServerFactory
from tests.fakes import ScriptedProvider
from tests.processes import ROOT


def cli(*args: str, server: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GENJOBS_")}
    # Wide and plain, so tables are not cut and assertions read plain text.
    full_env.update({"PYTHONPATH": str(ROOT), "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb", **env})
    if server is not None:
        full_env["GENJOBS_SERVER"] = server
    return subprocess.run(
        [sys.executable, "-m", "backend", *args], env=full_env, capture_output=True, text=True, timeout=120, check=False
    )


def test_submit_status_and_list(make_live_server: LiveServerFactory) -> None:
    url = make_live_server(worker_enabled=False)

    submitted = cli("submit", "--prompt", "a fox [in] the snow", "--num", "2", "--json", server=url)

    assert submitted.returncode == 0, submitted.stderr
    job = json.loads(submitted.stdout)
    assert (job["status"], job["numImages"], job["prompt"]) == ("pending", 2, "a fox [in] the snow")
    assert httpx.get(f"{url}/generations/{job['jobId']}").json()["jobId"] == job["jobId"]

    status = cli("status", job["jobId"], server=url)
    assert status.returncode == 0, status.stderr
    assert job["jobId"] in status.stdout and "pending" in status.stdout and "a fox [in] the snow" in status.stdout

    listed = cli("list", "--server", url)
    assert listed.returncode == 0, listed.stderr
    assert job["jobId"] in listed.stdout and "0/2" in listed.stdout and "1 jobs" in listed.stdout


def test_cancel_then_cancel_again(make_live_server: LiveServerFactory) -> None:
    url = make_live_server(worker_enabled=False)
    job_id = httpx.post(f"{url}/generations", json={"numImages": 1}).json()["jobId"]

    canceled = cli("cancel", job_id, server=url)
    assert canceled.returncode == 0, canceled.stderr
    assert "canceled" in canceled.stdout
    assert httpx.get(f"{url}/generations/{job_id}").json()["status"] == "canceled"

    again = cli("cancel", job_id, server=url)
    assert again.returncode == 1
    assert "already canceled" in again.stderr

    assert cli("status", job_id, server=url).returncode == 1


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["submit", "--num", "0"], "--num"),
        (["submit", "--kind", "gif"], "--kind"),
        (["submit", "--provider", "nope"], "known: animals, noop"),
        (["submit", "--num", "11"], "MAX_IMAGES_PER_JOB"),
        (["status", "6f1c1f3e-52bb-4b53-a1c7-4d8f0e3b6a11"], "does not exist"),
        (["list", "--status", "lost"], "--status"),
        (["frobnicate"], "No such command"),
    ],
)
def test_usage_errors_exit_2_naming_the_problem(
    make_live_server: LiveServerFactory, args: list[str], words: str
) -> None:
    url = make_live_server(worker_enabled=False)

    result = cli(*args, server=url)

    assert result.returncode == 2, (result.stdout, result.stderr)
    assert words in result.stderr
    assert httpx.get(f"{url}/generations").json() == []


def test_an_unreachable_server_exits_1_saying_so() -> None:
    result = cli("list", server=f"http://127.0.0.1:{free_port()}")

    assert result.returncode == 1
    assert "cannot reach" in result.stderr


def test_submit_a_video(make_live_server: LiveServerFactory) -> None:
    url = make_live_server(worker_enabled=False)

    result = cli("submit", "--kind", "video", "--duration", "2", "--aspect-ratio", "16:9", "--json", server=url)

    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    assert (job["kind"], job["durationSeconds"], job["aspectRatio"], job["numImages"]) == ("video", 2, "16:9", 1)
    too_many = cli("submit", "--kind", "video", "--num", "3", server=url)
    assert too_many.returncode == 2 and "numImages" in too_many.stderr


def test_submit_wait_shows_progress_and_saves_the_images(make_live_server: LiveServerFactory, tmp_path: Path) -> None:
    url = make_live_server(image_provider_delay=0.05)

    result = cli("submit", "--prompt", "a fox", "--num", "2", "--wait", "--out", str(tmp_path / "out"), server=url)

    assert result.returncode == 0, result.stderr
    saved = sorted((tmp_path / "out").iterdir())
    assert len(saved) == 2 and [p.suffix for p in saved] == [".png", ".png"]
    assert all(Image.open(path).format == "PNG" for path in saved)
    assert [str(p) for p in saved] == result.stdout.split()
    assert "2/2" in result.stderr and "completed" in result.stderr


def test_watch_a_failing_job_exits_1_with_its_error(make_live_server: LiveServerFactory) -> None:
    refuses = ScriptedProvider([PermanentProviderError("content_policy", "the prompt was refused")], name="strict")
    url = make_live_server({"strict": refuses, "animals": ScriptedProvider(name="animals")})
    job_id = httpx.post(f"{url}/generations", json={"numImages": 1, "provider": "strict"}).json()["jobId"]

    result = cli("watch", job_id, server=url)

    assert result.returncode == 1, result.stderr
    assert "content_policy" in result.stdout and "refused" in result.stdout


def test_api_key_from_the_option_or_the_environment(
    make_live_server: LiveServerFactory, database_url: str, tmp_path: Path
) -> None:
    url = make_live_server(auth_required=True, image_provider_delay=0.0)
    made = cli("keys", "create", "--name", "cli", "--json", DATABASE_URL=database_url, DATA_DIR=str(tmp_path))
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)["key"]

    refused = cli("list", server=url)
    assert refused.returncode == 2 and "key" in refused.stderr.lower()

    waited = cli("submit", "--num", "1", "--wait", "--out", str(tmp_path / "out"), "--api-key", key, server=url)
    assert waited.returncode == 0, waited.stderr
    (saved,) = (tmp_path / "out").iterdir()
    assert Image.open(saved).format == "PNG"  # the signed output URL, fetched with the key

    listed = cli("list", "--json", server=url, GENJOBS_API_KEY=key)
    assert listed.returncode == 0, listed.stderr
    assert [job["status"] for job in json.loads(listed.stdout)] == ["completed"]
