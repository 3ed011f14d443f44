"""API keys and authentication: key shape, 401s, anonymous fallback, revocation, the keys CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.accounts import ANONYMOUS_ACCOUNT_ID, Account
from backend.accounts.auth import Authenticator, anonymous_exposure
from backend.accounts.keys import KEY_LENGTH, key_hash, key_hint, new_key, new_webhook_secret, well_formed
from backend.accounts.repository import AccountRepository
from backend.config import Settings
from tests.conftest import ROOT, AppFactory
from tests.test_api import assert_problem

pytestmark = pytest.mark.usefixtures("engine")


async def make_key(engine: AsyncEngine, name: str = "someone", **limits: Any) -> tuple[Account, str]:
    key = new_key()
    account = await AccountRepository(engine).create(
        name=name,
        key_hash=key_hash(key),
        key_hint=key_hint(key),
        webhook_secret=new_webhook_secret(),
        rate_limit_per_minute=limits.get("rate_limit_per_minute"),
        max_concurrent=limits.get("max_concurrent"),
    )
    return account, key


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def test_keys_have_a_checksum_that_catches_typos() -> None:
    key = new_key()
    assert key.startswith("gj_") and len(key) == KEY_LENGTH and well_formed(key)
    assert len({new_key() for _ in range(100)}) == 100
    for position in range(3, KEY_LENGTH):
        replacement = "A" if key[position] != "A" else "B"
        assert not well_formed(key[:position] + replacement + key[position + 1 :])
    assert not well_formed(key[:-1])
    assert not well_formed("sk-" + key[3:])
    assert new_webhook_secret().startswith("whsec_")


async def test_auth_required_refuses_missing_malformed_unknown_and_revoked_keys(
    engine: AsyncEngine, make_client: AppFactory
) -> None:
    client = await make_client(auth_required=True, worker_enabled=False)
    account, key = await make_key(engine)
    unknown = new_key()
    typo = key[:-1] + ("A" if key[-1] != "A" else "B")

    cases = {
        "api_key_missing": {},
        "api_key_malformed": {"authorization": "Basic dXNlcjpwYXNz"},
        "api_key_malformed ": bearer(""),
        "api_key_malformed  ": bearer(typo),
        "api_key_invalid": bearer(unknown),
    }
    for code, headers in cases.items():
        for method, url in [("POST", "/generations"), ("GET", "/generations"), ("GET", f"/generations/{account.id}")]:
            response = await client.request(method, url, headers=headers, json={"numImages": 1})
            body = assert_problem(response, 401)
            assert body["code"] == code.strip(), (code, method, url)
            assert response.headers["www-authenticate"].startswith("Bearer")

    created = await client.post("/generations", headers=bearer(key), json={"numImages": 1})
    assert created.status_code == 202, created.text

    assert await AccountRepository(engine).revoke(account.id)
    # The app trusts a key for a few seconds (KEY_CACHE_SECONDS); a fresh app sees the revocation at once.
    fresh = await make_client(auth_required=True, worker_enabled=False)
    body = assert_problem(await fresh.get("/generations", headers=bearer(key)), 401)
    assert body["code"] == "api_key_invalid"


async def test_public_paths_need_no_key(make_client: AppFactory) -> None:
    client = await make_client(auth_required=True, worker_enabled=False)
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/redoc"):
        response = await client.get(path)
        assert response.status_code == 200, (path, response.text)


async def test_without_auth_a_valid_key_acts_as_its_account_and_anything_else_is_anonymous(
    engine: AsyncEngine, make_client: AppFactory
) -> None:
    client = await make_client(worker_enabled=False)
    _, key = await make_key(engine)
    mine = (await client.post("/generations", headers=bearer(key), json={"numImages": 1})).json()
    anonymous = (await client.post("/generations", json={"numImages": 1})).json()
    sdk_default = (await client.post("/generations", headers=bearer("sk-anything"), json={"numImages": 1})).json()

    listed = [job["jobId"] for job in (await client.get("/generations", headers=bearer(key))).json()]
    assert listed == [mine["jobId"]]
    anonymous_list = {job["jobId"] for job in (await client.get("/generations", headers=bearer("nonsense"))).json()}
    assert anonymous_list == {anonymous["jobId"], sdk_default["jobId"]}
    assert_problem(await client.get(f"/generations/{mine['jobId']}"), 404)


async def test_two_keys_cannot_see_each_others_jobs(engine: AsyncEngine, make_client: AppFactory) -> None:
    """The ownership pattern for every route that names an object: another account's object is a 404."""
    client = await make_client(auth_required=True, worker_enabled=False)
    _, alice = await make_key(engine, "alice")
    _, bob = await make_key(engine, "bob")
    job = (await client.post("/generations", headers=bearer(alice), json={"numImages": 1})).json()

    # Every route that names a job; later ones (deliveries, uploads, chats) follow the same pattern.
    for method, path in [
        ("GET", "/generations/{id}"),
        ("POST", "/generations/{id}/cancel"),
        ("GET", "/generations/{id}/events"),
    ]:
        response = await client.request(method, path.format(id=job["jobId"]), headers=bearer(bob))
        assert_problem(response, 404)
    assert (await client.get("/generations", headers=bearer(bob))).json() == []
    assert (await client.get(f"/generations/{job['jobId']}", headers=bearer(alice))).json()["status"] == "pending"
    canceled = await client.post(f"/generations/{job['jobId']}/cancel", headers=bearer(alice))
    assert canceled.json()["status"] == "canceled"


async def test_key_lookups_are_cached_briefly(engine: AsyncEngine) -> None:
    account, key = await make_key(engine)
    repo = AccountRepository(engine)
    authenticator = Authenticator(repo, ttl=60)
    assert await authenticator.account(key) == account
    await repo.revoke(account.id)
    assert await authenticator.account(key) == account  # within the window: still trusted
    assert await Authenticator(repo, ttl=0).account(key) is None


@pytest.mark.parametrize(
    ("host", "required", "allow", "refused"),
    [
        ("127.0.0.1", False, False, False),
        ("::1", False, False, False),
        ("localhost", False, False, False),
        ("0.0.0.0", False, False, True),
        ("192.168.1.5", False, False, True),
        ("0.0.0.0", True, False, False),
        ("0.0.0.0", False, True, False),
    ],
)
def test_anonymous_exposure(host: str, required: bool, allow: bool, refused: bool) -> None:
    settings = Settings(_env_file=None, host=host, auth_required=required, allow_anonymous=allow)  # type: ignore[call-arg]
    assert (anonymous_exposure(settings) is not None) == refused


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "backend", "keys", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
async def test_keys_cli_creates_lists_and_revokes(database_url: str, make_client: AppFactory, tmp_path: Path) -> None:
    env = {"DATABASE_URL": database_url, "DATA_DIR": str(tmp_path)}
    made = cli("create", "--name", "ci bot", "--rate-limit", "5", "--max-concurrent", "2", "--json", env=env)
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    assert set(created) == {"id", "name", "key", "webhookSecret"}
    assert well_formed(created["key"]) and created["webhookSecret"].startswith("whsec_")
    assert created["key"] not in made.stderr

    listed = cli("list", env=env)
    assert listed.returncode == 0 and created["id"] in listed.stdout and "ci bot" in listed.stdout
    assert created["key"] not in listed.stdout and key_hint(created["key"]) in listed.stdout
    assert str(ANONYMOUS_ACCOUNT_ID) not in listed.stdout

    client = await make_client(auth_required=True, worker_enabled=False)
    assert (await client.get("/generations", headers=bearer(created["key"]))).status_code == 200

    assert cli("revoke", created["id"], env=env).returncode == 0
    rows = json.loads(cli("list", "--json", env=env).stdout)
    assert [row["revokedAt"] is not None for row in rows if row["id"] == created["id"]] == [True]
    missing = cli("revoke", str(ANONYMOUS_ACCOUNT_ID), env=env)
    assert missing.returncode == 1 and "no API key" in missing.stderr
    bad = cli("create", "--name", "x", "--rate-limit", "-1", env=env)
    assert bad.returncode == 2 and "--rate-limit" in bad.stderr


async def test_openai_facade_uses_the_same_keys(engine: AsyncEngine, make_client: AppFactory) -> None:
    client = await make_client(auth_required=True, worker_enabled=False)
    refused = await client.post("/v1/images/generations", headers=bearer(new_key()), json={"prompt": "a cat"})
    assert refused.status_code == 401
    assert refused.json()["error"]["message"]  # OpenAI's error shape under /v1
    assert refused.headers["www-authenticate"].startswith("Bearer")
