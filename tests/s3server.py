"""A real S3-protocol server for tests: moto's standalone server, run as a child process.

It listens on 127.0.0.1 only and dies with the test run (the kernel sends it SIGTERM
when its parent goes, even after a SIGKILL).
"""

from __future__ import annotations

import ctypes
import json
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx

from backend.embedded_pg import free_port

_PR_SET_PDEATHSIG = 1
# moto accepts any credentials; these only have to be present and consistent.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret"}


@dataclass
class S3Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def public_endpoint(self) -> str:
        """The same server under another host name, as a client outside compose would see MinIO."""
        return f"http://localhost:{self.port}"

    def create_bucket(self, name: str | None = None) -> str:
        name = name or f"test-{uuid.uuid4().hex[:12]}"
        response = httpx.put(f"{self.endpoint}/{name}", timeout=10)
        assert response.status_code == 200, response.text
        return name

    def allow_public_reads(self, bucket: str) -> None:
        """What an operator does for USE_PUBLIC_URLS=true: anyone may GET the bucket's objects."""
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": "*",
                    "Action": ["s3:GetObject"],
                    "Resource": [f"arn:aws:s3:::{bucket}/*"],
                }
            ],
        }
        response = httpx.put(f"{self.endpoint}/{bucket}?policy", content=json.dumps(policy), timeout=10)
        assert response.status_code in (200, 204), response.text

    def env(self, bucket: str) -> dict[str, str]:
        """The settings (as environment variables) of a service that stores in `bucket`."""
        return {
            "STORAGE_BACKEND": "s3",
            "S3_BUCKET": bucket,
            "S3_ENDPOINT_INTERNAL": self.endpoint,
            "S3_PUBLIC_ENDPOINT": self.public_endpoint,
            "S3_USE_PATH_STYLE": "true",
            **CREDENTIALS,
        }

    def start_again(self, timeout: float = 30) -> None:
        """Start a stopped server again on the same port (so clients' endpoint stays valid).

        moto keeps everything in memory: it comes back with no bucket at all."""
        self.process = start_s3_server(self.log.parent, timeout, port=self.port).process

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def start_s3_server(log_dir: Path, timeout: float = 30, *, port: int | None = None) -> S3Server:
    port = port or free_port()
    log = log_dir / f"moto-{port}.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
    server = S3Server(process, port, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"moto exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            httpx.get(f"{server.endpoint}/", timeout=1)
            return server
        except httpx.HTTPError:
            time.sleep(0.05)
    server.stop()
    raise AssertionError(f"moto did not start within {timeout}s: {log.read_text()[-2000:]}")
