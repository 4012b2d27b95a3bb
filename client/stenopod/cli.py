"""`stenopod`: transcribe a backlog, serve a local endpoint, inspect or steer a backlog's state.

Exit codes: 0 every item succeeded, 1 some failed (they are listed) or the run stopped, 2 usage
errors and a refused API key. Errors are one line on stderr; a traceback only ever means a bug.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from stenopod import __version__
from stenopod.cli_args import formats, positive_float, positive_int
from stenopod.cli_transcription import add_transcription_arguments, transcription_options

if TYPE_CHECKING:
    from stenopod.backlog.ledger import Ledger
    from stenopod.backlog.options import BacklogOptions

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
# Failed items listed at the end of a run; the manifest has them all.
_MAX_LISTED = 50


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in our one-line style (and exits 2, as argparse does)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="stenopod", description="Transcribe audio backlogs on RunPod serverless, or locally."
    )
    parser.add_argument("--version", action="version", version=f"stenopod {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("transcribe", help="transcribe every recording the sources name")
    run.add_argument(
        "sources", nargs="+", metavar="SOURCE", help="files, folders, globs, URLs, manifests, s3://, feeds"
    )
    run.add_argument(
        "--output", "-o", default="transcripts", help="folder or s3://bucket/prefix/ (default ./transcripts)"
    )
    run.add_argument("--model", help="model id (default: the worker's default model)")
    run.add_argument(
        "--formats",
        type=formats,
        default=("json", "txt", "srt", "vtt"),
        help="comma list of json,txt,srt,vtt",
    )
    run.add_argument("--timestamps", choices=["none", "segment", "word"], default="segment")
    add_transcription_arguments(run)
    run.add_argument(
        "--endpoint",
        help="RunPod endpoint id (with RUNPOD_API_KEY) or a local endpoint URL such as http://127.0.0.1:8000; "
        "default: start a local endpoint for this run",
    )
    run.add_argument("--api-key", help="endpoint API key (default: RUNPOD_API_KEY)")
    run.add_argument(
        "--state",
        help="state file (default: <output>/.stenopod-state.sqlite, or ./stenopod-state.sqlite for s3://)",
    )
    run.add_argument(
        "--max-in-flight", type=positive_int, default=16, help="jobs submitted at once (default 16)"
    )
    run.add_argument(
        "--job-seconds",
        type=positive_float,
        default=600.0,
        help="audio seconds packed per job (default 600)",
    )
    run.add_argument("--max-attempts", type=positive_int, default=3, help="attempts per item (default 3)")
    run.add_argument(
        "--webhook-listen", metavar="HOST:PORT", help="receive job webhooks here instead of polling"
    )
    run.add_argument(
        "--webhook-url", help="public base URL of the webhook listener, when behind NAT or a proxy"
    )
    run.add_argument(
        "--presign-expiry",
        dest="presign_expiry_s",
        type=positive_int,
        default=24 * 3600,
        help="seconds presigned input URLs live",
    )
    run.add_argument(
        "--gpu", help="GPU the endpoint runs on, for the cost estimate (e.g. ADA_24, A100, H100)"
    )
    run.add_argument(
        "--price-per-s", type=float, help="USD per second of execution, overriding the price table"
    )
    run.add_argument("--price-table", help="JSON file of GPU -> USD per second")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")

    serve = sub.add_parser("serve", help="run a RunPod-compatible endpoint on this machine")
    from stenopod.local import add_serve_arguments

    add_serve_arguments(serve)

    for name, text in (
        ("status", "show a backlog's state"),
        ("retry", "give failed items new attempts and run the backlog again"),
        ("cancel", "cancel the backlog's jobs still running on the endpoint"),
    ):
        command = sub.add_parser(name, help=text)
        command.add_argument(
            "--state", required=True, help="the backlog's state file, or the output folder holding it"
        )
        if name != "status":
            command.add_argument("--api-key", help="endpoint API key (default: RUNPOD_API_KEY)")
        if name == "retry":
            command.add_argument("--no-progress", action="store_true")
        if name == "status":
            command.add_argument("--json", action="store_true", help="machine-readable output")

    schema = sub.add_parser("schema", help="print the JSON Schema of the job input and output")
    which = schema.add_mutually_exclusive_group()
    which.add_argument("--input", action="store_const", const="input", dest="which")
    which.add_argument("--output", action="store_const", const="output", dest="which")
    which.add_argument("--all", action="store_const", const="all", dest="which")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # argparse exits on --help, --version and usage errors
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    try:
        return _COMMANDS[args.command](args)
    except BrokenPipeError:
        # The reader went away (`stenopod schema | head`): not worth a traceback. Python would
        # complain again flushing stdout at exit, so it is pointed at /dev/null first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except KeyboardInterrupt:
        _err("interrupted; run the same command again to finish the backlog")
        return 130


def _err(message: str) -> None:
    print(f"stenopod: {message}", file=sys.stderr)


# --- transcribe / retry ---------------------------------------------------------------------------


def _transcribe(args: argparse.Namespace) -> int:
    from stenopod.backlog.options import BacklogOptions

    # The subcommand's option names are BacklogOptions' own (see build_parser's dest names).
    options = BacklogOptions.from_values({**vars(args), **transcription_options(args)})
    return _run(options, state=args.state, api_key=args.api_key, progress=not args.no_progress)


def _run(options: BacklogOptions, *, state: str | None, api_key: str | None, progress: bool) -> int:
    from stenopod.api import run_backlog
    from stenopod.backlog.errors import BacklogError, EndpointRefused, UsageError
    from stenopod.backlog.ledger import LedgerError
    from stenopod.backlog.preflight import default_state_path
    from stenopod.endpoint import EndpointError
    from stenopod.storage import StorageError

    state_path = Path(state) if state else default_state_path(options.output)
    # The embedded worker's chatter goes to a file beside the state, keeping the terminal for progress.
    log_dir = state_path.parent / ".stenopod-logs" if options.endpoint is None else None
    try:
        report = asyncio.run(
            run_backlog(
                options,
                state=state_path,
                api_key=api_key,
                show_progress=progress and sys.stderr.isatty(),
                worker_log_dir=log_dir,
            )
        )
    except (UsageError, LedgerError, ValueError) as error:
        _err(str(error))
        return EXIT_USAGE
    except EndpointRefused as error:
        # Not a transient stop: the same command fails the same way until the key changes.
        _err(f"stopped: {error}; fix the key (--api-key or RUNPOD_API_KEY), then run the command again")
        return EXIT_USAGE
    except (BacklogError, EndpointError, StorageError, OSError) as error:
        _err(f"stopped: {error}; run the same command again to resume")
        return EXIT_FAILED
    from stenopod.backlog.progress import format_duration

    hours = report.audio_seconds / 3600
    print(
        f"{report.done} of {report.total} items transcribed ({hours:.2f} h of audio) in "
        f"{format_duration(report.wall_seconds)}; {report.failed} failed"
        + (f", {report.pending} unfinished" if report.pending else "")
    )
    if report.cost_usd is not None:
        print(
            f"cost: ${report.cost_usd:.4f} for {report.execution_seconds:.0f} s of execution on {report.gpu} "
            "(--gpu / --price-per-s to change the price)"
        )
    print(f"transcripts: {report.output}")
    print(f"manifest: {report.manifest}")
    print(f"state: {report.state}")
    if log_dir is not None and report.failed:
        print(f"worker logs: {log_dir}")
    failed = report.failed_items
    for item in failed[:_MAX_LISTED]:
        print(f"failed: {item.id} ({item.source}): {item.error_code}: {item.error_message}", file=sys.stderr)
    if len(failed) > _MAX_LISTED:
        more = len(failed) - _MAX_LISTED
        print(f"... and {_items(more, 'more failed item')}: see the manifest", file=sys.stderr)
    if failed:
        # Failed items have used up their attempts: a plain rerun leaves them failed.
        print(
            f"once their cause is fixed, give them new attempts: stenopod retry --state {report.state}",
            file=sys.stderr,
        )
    return EXIT_OK if report.ok else EXIT_FAILED


def _items(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _open_ledger(path: str) -> Ledger:
    from stenopod.backlog.ledger import Ledger, LedgerError

    if Path(path).is_dir():
        # The output folder names its backlog: the state file lives inside it by default.
        path = str(Path(path) / ".stenopod-state.sqlite")
    if not Path(path).is_file():
        raise LedgerError(f"--state: no state file at {path}")
    ledger = Ledger(path)
    if ledger.get_meta("options") is None:
        ledger.close()
        raise LedgerError(f"--state: {path} is not a stenopod state file")
    return ledger


def _retry(args: argparse.Namespace) -> int:
    from stenopod.backlog.ledger import LedgerError
    from stenopod.backlog.options import BacklogOptions

    try:
        with _open_ledger(args.state) as ledger:
            options = BacklogOptions.from_json(ledger.get_meta("options"))
            reset = ledger.reset_failed()
            state = str(ledger.path)
    except LedgerError as error:
        _err(str(error))
        return EXIT_USAGE
    print(f"{_items(reset, 'failed item')} {'gets' if reset == 1 else 'get'} new attempts")
    return _run(options, state=state, api_key=args.api_key, progress=not args.no_progress)


# --- status / cancel ------------------------------------------------------------------------------


def _status(args: argparse.Namespace) -> int:
    from stenopod.backlog.ledger import LedgerError
    from stenopod.backlog.states import ItemState

    try:
        with _open_ledger(args.state) as ledger:
            counts = ledger.counts()
            options = ledger.get_meta("options") or {}
            failed = ledger.items(ItemState.FAILED)
            open_jobs = ledger.open_submissions()
    except LedgerError as error:
        _err(str(error))
        return EXIT_USAGE
    if args.json:
        print(
            json.dumps(
                {
                    "counts": counts.__dict__ | {"total": counts.total},
                    "output": options.get("output"),
                    "endpoint": options.get("endpoint"),
                    "open_jobs": [sub.job_id for sub in open_jobs],
                    "failed": [
                        {
                            "id": item.id,
                            "source": item.source,
                            "code": item.error_code,
                            "message": item.error_message,
                        }
                        for item in failed
                    ],
                }
            )
        )
        return EXIT_OK
    print(
        f"{counts.total} items: {counts.done} done, {counts.failed} failed, {counts.submitted} in flight, "
        f"{counts.pending} pending"
    )
    print(f"output: {options.get('output')}")
    print(f"endpoint: {options.get('endpoint') or 'embedded local endpoint'}")
    if open_jobs:
        print(f"jobs in flight: {len(open_jobs)}")
    for item in failed[:_MAX_LISTED]:
        print(f"failed: {item.id} ({item.source}): {item.error_code}: {item.error_message}")
    return EXIT_OK


def _cancel(args: argparse.Namespace) -> int:
    from stenopod.backlog.ledger import LedgerError
    from stenopod.endpoint import EndpointClient, EndpointError, EndpointNotFound

    try:
        with _open_ledger(args.state) as ledger:
            options = ledger.get_meta("options") or {}
            job_ids = [sub.job_id for sub in ledger.open_submissions() if sub.job_id]
    except LedgerError as error:
        _err(str(error))
        return EXIT_USAGE
    endpoint = options.get("endpoint")
    if not endpoint:
        print("nothing to cancel: the embedded local endpoint stopped with the run that started it")
        return EXIT_OK

    async def cancel_all() -> tuple[int, list[str]]:
        cancelled, problems = 0, []
        async with EndpointClient(endpoint, args.api_key) as client:
            for job_id in job_ids:
                try:
                    await client.cancel(job_id)
                    cancelled += 1
                except EndpointNotFound:
                    pass  # already gone: nothing left to stop
                except EndpointError as error:
                    problems.append(f"{job_id}: {error.message}")
        return cancelled, problems

    try:
        cancelled, problems = asyncio.run(cancel_all())
    except ValueError as error:
        _err(str(error))
        return EXIT_USAGE
    print(
        f"cancelled {cancelled} of {len(job_ids)} jobs in flight; run the transcribe command again to resume"
    )
    for problem in problems:
        _err(f"cannot cancel {problem}")
    return EXIT_FAILED if problems else EXIT_OK


# --- serve / schema -------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    from stenopod.local import serve_main

    return serve_main(args)


def _schema(args: argparse.Namespace) -> int:
    from stenopod.schema import input_json_schema, output_json_schema

    which = args.which or "all"
    if which == "input":
        document = input_json_schema()
    elif which == "output":
        document = output_json_schema()
    else:
        document = {"input": input_json_schema(), "output": output_json_schema()}
    print(json.dumps(document, indent=2))
    return EXIT_OK


_COMMANDS = {
    "transcribe": _transcribe,
    "retry": _retry,
    "status": _status,
    "cancel": _cancel,
    "serve": _serve,
    "schema": _schema,
}

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
