"""A real service process killed mid-poll: the restarted one resumes the remote job and never pays for a second."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from tests.polling import wait_until
from tests.processes import kill_all, start_service
from tests.test_remote_providers import DRIVERS

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("engine")]


@pytest.mark.parametrize("name", list(DRIVERS))
def test_sigkill_mid_poll_then_restart_completes_with_one_remote_job(
    tmp_path: Path, database_url: str, name: str
) -> None:
    driver = DRIVERS[name]
    kind = driver.kinds[0]
    with driver.serve() as fake:
        env = {
            "DATABASE_URL": database_url,
            "PROVIDERS": f"animals,{name}",
            "DEFAULT_PROVIDER": name,
            "POLL_INITIAL_SECONDS": "0.05",
            "POLL_MAX_SECONDS": "0.2",
            "LEASE_SECONDS": "2",
            "WORKER_POLL_INTERVAL": "0.2",
            **{key.upper(): value for key, value in driver.settings(fake.url).items()},
        }
        fake.hold = True  # the remote job runs until the test lets it finish
        first = start_service(tmp_path / "first", env)
        second = None
        try:
            first.wait_ready()
            body = {"kind": "video", "durationSeconds": 4} if kind == "video" else {"numImages": 1}
            job_id = httpx.post(f"{first.url}/generations", json=body, timeout=10).json()["jobId"]
            wait_until(lambda: len(fake.polls) >= 2, "the first process never polled the remote job")
            first.signal(signal.SIGKILL)
            first.wait(10)

            second = start_service(tmp_path / "second", env)
            second.wait_ready()
            fake.hold = False
            with httpx.Client(base_url=second.url, timeout=10) as client:

                def finished() -> bool:
                    return client.get(f"/generations/{job_id}").json()["status"] in ("completed", "failed")

                wait_until(finished, f"the job did not finish after the restart:\n{second.output()}")
                job = client.get(f"/generations/{job_id}").json()
                assert job["status"] == "completed", job["error"]
                assert len(fake.creates) == 1, "the restarted service paid for a second remote job"
                (remote_id,) = fake.jobs
                assert job["providerJobId"] == remote_id and job["attempts"] == 2
                extension = "mp4" if kind == "video" else "png"
                stored = client.get(job["outputs"][0]["url"])
                assert stored.content == fake.media[f"{remote_id}-0.{extension}"][0]
        finally:
            kill_all(first, *([second] if second else []))
