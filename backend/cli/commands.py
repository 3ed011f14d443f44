"""The commands: submit, status, list, cancel, watch. Exit 0 completed, 1 failed or canceled, 2 usage."""

from __future__ import annotations

import enum
import mimetypes
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from backend.cli.client import FINISHED, Api, ApiError, Job

OK, FAILED, USAGE = 0, 1, 2
STATUS_STYLE = {
    "pending": "yellow",
    "processing": "cyan",
    "completed": "green",
    "failed": "red",
    "canceled": "magenta",
}
EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp", "video/mp4": ".mp4"}

app = typer.Typer(
    name="python -m backend",
    help="Generation Jobs API from a terminal. With no command (or `serve`) it serves the API instead.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Results go to stdout (scripts read them); progress and messages to stderr.
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


class Kind(enum.StrEnum):
    image = "image"
    video = "video"


class AspectRatio(enum.StrEnum):
    square = "1:1"
    landscape = "16:9"
    portrait = "9:16"


class Status(enum.StrEnum):
    pending = "pending"
    processing = "processing"
    completed = "completed"
    failed = "failed"
    canceled = "canceled"


Server = Annotated[
    str, typer.Option("--server", envvar="GENJOBS_SERVER", help="The service's base URL.", show_envvar=True)
]
ApiKey = Annotated[
    str | None,
    typer.Option("--api-key", envvar="GENJOBS_API_KEY", help="Bearer key (when AUTH_REQUIRED).", show_envvar=True),
]
JobId = Annotated[str, typer.Argument(help="The job's id (jobId).", show_default=False)]
AsJson = Annotated[bool, typer.Option("--json", help="Print the API's JSON instead of a summary.")]
OutDir = Annotated[
    Path | None,
    typer.Option("--out", file_okay=False, help="Save the outputs into this folder (created if missing)."),
]
DEFAULT_SERVER = "http://127.0.0.1:8000"


@contextmanager
def api(server: str, api_key: str | None) -> Iterator[Api]:
    """An API client; an error answer becomes a message and the exit code it deserves."""
    client = Api(server, api_key)
    try:
        yield client
    except ApiError as exc:
        where = f" ({', '.join(exc.fields)})" if exc.fields else ""
        err.print(f"[red]error[/red]: {escape(exc.detail + where)}", highlight=False)
        # A 4xx means what was asked is wrong (a usage error); anything else is a failure.
        raise typer.Exit(USAGE if 400 <= exc.status < 500 and exc.status != 409 else FAILED) from None
    finally:
        client.close()


@app.command()
def submit(
    prompt: Annotated[str | None, typer.Option("--prompt", help="What to generate.")] = None,
    num: Annotated[int, typer.Option("--num", min=1, help="How many images (image jobs).")] = 1,
    kind: Annotated[Kind, typer.Option("--kind", help="image or video.")] = Kind.image,
    provider: Annotated[
        str | None, typer.Option("--provider", help="A provider; the server's default if unset.")
    ] = None,
    duration: Annotated[int | None, typer.Option("--duration", min=1, help="Video length in seconds.")] = None,
    aspect_ratio: Annotated[AspectRatio | None, typer.Option("--aspect-ratio", help="Video shape.")] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Show progress until the job ends; exit by its outcome.")
    ] = False,
    out_dir: OutDir = None,
    as_json: AsJson = False,
    server: Server = DEFAULT_SERVER,
    api_key: ApiKey = None,
) -> None:
    """Submit a generation job."""
    body: dict[str, Any] = {"kind": kind.value}
    if kind is Kind.image or num != 1:
        body["numImages"] = num  # a video is one output; the server names a --num it cannot honour
    options = {"prompt": prompt, "provider": provider, "durationSeconds": duration, "aspectRatio": aspect_ratio}
    body.update(
        {name: str(value) if isinstance(value, enum.Enum) else value for name, value in options.items() if value}
    )
    with api(server, api_key) as client:
        job = client.create(body)
        if not wait:
            show_job(job, as_json)
            return
        err.print(f"submitted [bold]{job['jobId']}[/bold]", highlight=False)
        finish(client, job, out_dir, as_json)


@app.command()
def status(job_id: JobId, as_json: AsJson = False, server: Server = DEFAULT_SERVER, api_key: ApiKey = None) -> None:
    """Show a job. Exits 1 if it failed or was canceled."""
    with api(server, api_key) as client:
        job = client.get(job_id)
    show_job(job, as_json)
    raise typer.Exit(exit_code(job))


@app.command("list")
def list_jobs(
    limit: Annotated[int, typer.Option("--limit", min=1, max=200, help="How many, newest first.")] = 20,
    status: Annotated[Status | None, typer.Option("--status", help="Only jobs in this status.")] = None,
    as_json: AsJson = False,
    server: Server = DEFAULT_SERVER,
    api_key: ApiKey = None,
) -> None:
    """List jobs, newest first."""
    with api(server, api_key) as client:
        jobs = client.list(limit, status.value if status else None)
    if as_json:
        out.print_json(data=jobs)
        return
    table = Table(title=f"{len(jobs)} jobs", box=box.SIMPLE_HEAD, pad_edge=False)
    # Ids are what people copy into the next command: never cut; the prompt gives way instead.
    table.add_column("ID", no_wrap=True, min_width=36)
    for name in ("Status", "Outputs", "Created"):
        table.add_column(name, no_wrap=True)
    table.add_column("Prompt", no_wrap=True, overflow="ellipsis", ratio=1)
    for job in jobs:
        done, total = progress_of(job)
        table.add_row(
            job["jobId"],
            styled(job["status"]),
            f"{done}/{total} {job.get('kind', 'image')}",
            job["createdAt"].replace("T", " ")[5:16],
            escape(job.get("prompt") or ""),
        )
    out.print(table)


@app.command()
def cancel(job_id: JobId, server: Server = DEFAULT_SERVER, api_key: ApiKey = None) -> None:
    """Cancel a pending or running job (a finished one cannot be: exit 1)."""
    with api(server, api_key) as client:
        job = client.cancel(job_id)
    out.print(f"{job['jobId']} {styled(job['status'])}", highlight=False)


@app.command()
def watch(
    job_id: JobId,
    out_dir: OutDir = None,
    as_json: AsJson = False,
    server: Server = DEFAULT_SERVER,
    api_key: ApiKey = None,
) -> None:
    """Follow a job's progress until it ends; exit by its outcome."""
    with api(server, api_key) as client:
        finish(client, client.get(job_id), out_dir, as_json)


def finish(client: Api, job: Job, out_dir: Path | None, as_json: bool) -> None:
    """Follow the job to its end, save its outputs, and exit by its outcome."""
    job = follow(client, job)
    if out_dir is not None and job["status"] == "completed":
        for path in save_outputs(client, job, out_dir):
            out.print(str(path), highlight=False)
    if as_json:
        out.print_json(data=job)
    elif job["status"] != "completed":
        show_job(job, False)
    raise typer.Exit(exit_code(job))


def follow(client: Api, job: Job) -> Job:
    """A progress bar driven by the job's events; returns the job as its last event has it."""
    done, total = progress_of(job)
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err) as bar:
        task = bar.add_task(describe(job), total=total, completed=done)
        if job["status"] not in FINISHED:
            for event in client.events(job["jobId"]):
                job = event["data"]
                done, total = progress_of(job)
                bar.update(task, description=describe(job), completed=done, total=total)
    return job


def save_outputs(client: Api, job: Job, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    saved = []
    for index, output in enumerate(outputs_of(job)):
        suffix = EXTENSIONS.get(output.get("contentType") or "") or Path(output["url"].split("?")[0]).suffix
        path = folder / f"{job['jobId']}-{index}{suffix}"
        path.write_bytes(client.download(output["url"]))
        saved.append(path)
    return saved


def outputs_of(job: Job) -> list[dict[str, Any]]:
    outputs: list[dict[str, Any]] | None = job.get("outputs")
    if outputs is not None:
        return outputs
    return [{"url": url, "contentType": mimetypes.guess_type(url)[0]} for url in job.get("imageUrls") or []]


def progress_of(job: Job) -> tuple[int, int]:
    total = job.get("totalOutputs") or (1 if job.get("kind") == "video" else job.get("numImages") or 1)
    done = job.get("completedOutputs")
    if done is None:
        done = len(outputs_of(job))
    return int(done), int(total)


def describe(job: Job) -> str:
    return f"{job['jobId'][:8]} {styled(job['status'])}"


def styled(status: str) -> str:
    return f"[{STATUS_STYLE.get(status, 'white')}]{status}[/]"


def exit_code(job: Job) -> int:
    return FAILED if job["status"] in ("failed", "canceled") else OK


def show_job(job: Job, as_json: bool) -> None:
    if as_json:
        out.print_json(data=job)
        return
    grid = Table.grid(padding=(0, 2))
    grid.add_row("id", job["jobId"])
    grid.add_row("status", styled(job["status"]))
    done, total = progress_of(job)
    grid.add_row("kind", f"{job.get('kind', 'image')} ({done}/{total} outputs)")
    grid.add_row("provider", job["provider"] + (f" / {job['model']}" if job.get("model") else ""))
    if job.get("prompt"):
        grid.add_row("prompt", escape(job["prompt"]))
    if job.get("error"):
        grid.add_row("error", f"[red]{job['error']['code']}[/red]: {escape(job['error']['message'])}")
    grid.add_row("created", job["createdAt"])
    for output in outputs_of(job):
        grid.add_row("output", escape(output["url"]))
    out.print(grid, highlight=False)
