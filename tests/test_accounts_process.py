"""Accounts in the real service process: the start-up refusal, and keys never reaching the logs."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.accounts.keys import new_key
from backend.accounts.repository import AccountRepository
from tests.processes import start_service
from tests.test_accounts import bearer, make_key

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("engine")]


def test_refuses_to_serve_anonymously_beyond_loopback(tmp_path: Path, database_url: str) -> None:
    # 192.0.2.1 is a documentation address: were the check missing, binding it would fail too, but later.
    service = start_service(tmp_path, {"HOST": "192.0.2.1", "DATABASE_URL": database_url})
    try:
        assert service.wait(30) != 0
        lines = [line for line in service.output().splitlines() if line.strip()]
        assert len(lines) == 1, lines
        assert "AUTH_REQUIRED" in lines[0] and "ALLOW_ANONYMOUS" in lines[0]
    finally:
        service.stop()


async def test_keys_never_reach_the_logs(tmp_path: Path, database_url: str, engine: AsyncEngine) -> None:
    account, key = await make_key(engine)
    env = {"DATABASE_URL": database_url, "AUTH_REQUIRED": "true", "LOG_LEVEL": "DEBUG", "LOG_FORMAT": "json"}
    service = start_service(tmp_path, env)
    unknown, typo = new_key(), key[:-1] + ("A" if key[-1] != "A" else "B")
    try:
        service.wait_ready()
        with httpx.Client(base_url=service.url, timeout=10) as client:
            job = client.post("/generations", headers=bearer(key), json={"numImages": 1}).json()
            for attempt in (key, unknown, typo, f"{key} trailing"):
                client.get(f"/generations/{job['jobId']}", headers=bearer(attempt))
                client.get(f"/generations/{job['jobId']}?api_key={attempt}")
            await AccountRepository(engine).revoke(account.id)
            deadline = time.monotonic() + 30
            while client.get("/generations", headers=bearer(key)).status_code != 401:
                assert time.monotonic() < deadline, "a revoked key must stop working within seconds"
                time.sleep(0.2)
    finally:
        service.stop()
    log = service.log.read_text()
    assert "generations" in log  # the requests were logged...
    for secret in (key, unknown, typo):
        assert secret[3:] not in log  # ...but no key, nor its random part
