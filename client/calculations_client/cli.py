"""`calculations`: the client on the command line.

Exit codes: 0 done; 1 a waited run failed or was cancelled, or the service refused (a
conflict, a wrong token); 2 a usage error (the service's invalid_request too); 3 the service
unreachable or unavailable after the retries; 4 no such run.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, replace
from datetime import date, datetime
from typing import Any, TextIO

from calculations_client.errors import ApiError, InvalidRequest, NotFound, Unavailable
from calculations_client.frames import COLUMNS
from calculations_client.models import Run
from calculations_client.progress import bar
from calculations_client.protocol import DEFAULT_RETRY
from calculations_client.sync import Client

OK, ENDED_BADLY, USAGE, UNAVAILABLE, NOT_FOUND = 0, 1, 2, 3, 4
FIRST_PAGE = 10  # runs `list` shows without --all


def common(default: Any) -> argparse.ArgumentParser:
    """The options taken before or after the command: `calculations get 5 --json`. A
    command's copies default to SUPPRESS, so that they never reset what came before it."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--url", default=default, help="CALCULATIONS_URL, else 127.0.0.1:8080")
    options.add_argument("--token", default=default, help="the API token (CALCULATIONS_TOKEN)")
    options.add_argument(
        "--json", action="store_true", default=default or False, help="JSON on stdout"
    )
    options.add_argument(
        "--retry-for", type=float, default=default or DEFAULT_RETRY.total, metavar="S",
        help=f"retry a refused or unanswered request for up to S seconds ({DEFAULT_RETRY.total:g})",
    )  # fmt: skip
    return options


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="calculations", description=__doc__, parents=[common(None)],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str) -> argparse.ArgumentParser:
        parents = [common(argparse.SUPPRESS)]
        return commands.add_parser(name, help=text, description=text, parents=parents)

    submit = command("submit", "create a run")
    submit.add_argument("--start", required=True, metavar="YYYY-MM-DD", help="date_start")
    submit.add_argument("--fin", required=True, metavar="YYYY-MM-DD", help="date_fin")
    submit.add_argument("--lag", required=True, type=int, metavar="DAYS")
    submit.add_argument("--name")
    submit.add_argument("--seed", type=int)
    submit.add_argument("--wait", action="store_true", help="wait for it to end")
    command("get", "show one run").add_argument("id", type=int)
    wait = command("wait", "wait for runs to end, with a progress bar")
    wait.add_argument("ids", type=int, nargs="+", metavar="ID")
    wait.add_argument("--timeout", type=float, help="give up after this many seconds")
    listing = command("list", f"the {FIRST_PAGE} newest runs, or --all")
    listing.add_argument("--status", choices=("queued", "running", "done", "failed", "cancelled"))
    listing.add_argument("--all", action="store_true", help="every run, page after page")
    listing.add_argument("--order", choices=("desc", "asc"), default="desc")
    result = command("result", "a done run's rows")
    result.add_argument("id", type=int)
    result.add_argument("--csv", action="store_true", help="as CSV")
    result.add_argument("-o", "--output", metavar="FILE", help="write to FILE, not stdout")
    command("cancel", "stop a queued or running run").add_argument("id", type=int)
    command("delete", "delete a run and its result").add_argument("id", type=int)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        retry = replace(DEFAULT_RETRY, total=args.retry_for)
        with Client(args.url, args.token, retry=retry) as client:
            code: int = COMMANDS[args.command](client, args, sys.stdout)
            return code
    except ApiError as exc:
        print(f"calculations: {exc}", file=sys.stderr)
        return exit_code(exc)
    except TimeoutError as exc:
        print(f"calculations: {exc}", file=sys.stderr)
        return ENDED_BADLY
    except KeyboardInterrupt:
        return 130


def exit_code(error: ApiError) -> int:
    if isinstance(error, NotFound):
        return NOT_FOUND
    if isinstance(error, Unavailable):
        return UNAVAILABLE
    if isinstance(error, InvalidRequest):
        return USAGE
    return ENDED_BADLY


def ended_code(runs: Iterable[Run]) -> int:
    return OK if all(run.done for run in runs) else ENDED_BADLY


def do_submit(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    run = client.submit(args.start, args.fin, args.lag, name=args.name, seed=args.seed)
    if args.wait:
        run = client.wait(run.id)
    show_run(run, args.json, out)
    return ended_code([run]) if args.wait else OK


def do_get(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    show_run(client.get(args.id), args.json, out)
    return OK


def do_wait(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    shown = bar(len(args.ids), not args.json)
    runs = []
    try:
        for calc_id in args.ids:
            runs.append(client.wait(calc_id, args.timeout))
            shown.update()
    finally:
        shown.close()
    show_runs(runs, args.json, out, ("id", "status", "duration", "name"))
    return ended_code(runs)


def do_list(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    found = client.runs(status=args.status, order=args.order)
    runs = list(found if args.all else itertools.islice(found, FIRST_PAGE + 1))
    more = not args.all and len(runs) > FIRST_PAGE
    shown = runs[:FIRST_PAGE] if more else runs
    show_runs(shown, args.json, out, ("id", "status", "created_at", "name"))
    if more:
        print(f"(the {FIRST_PAGE} newest shown; --all lists every run)", file=sys.stderr)
    return OK


def do_result(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    if args.output is not None:
        with open(args.output, "w", encoding="utf-8", newline="") as target:
            return write_result(client, args, target)
    return write_result(client, args, out)


def write_result(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    if args.csv:
        body = io.BytesIO()
        client.csv(args.id, body)
        out.write(body.getvalue().decode())
        return OK
    run = client.get(args.id)
    if run.result is None:
        print(f"calculations: run {run.id} is {run.status}; it has no result", file=sys.stderr)
        return ENDED_BADLY
    if args.json:
        out.write(json.dumps(run.result) + "\n")
    else:
        table([[row[name] for name in COLUMNS] for row in run.result], COLUMNS, out)
    return OK


def do_cancel(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    show_run(client.cancel(args.id), args.json, out)
    return OK


def do_delete(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    client.delete(args.id)
    if args.json:
        out.write(json.dumps({"id": args.id, "deleted": True}) + "\n")
    else:
        out.write(f"run {args.id} deleted\n")
    return OK


COMMANDS = {
    "submit": do_submit,
    "get": do_get,
    "wait": do_wait,
    "list": do_list,
    "result": do_result,
    "cancel": do_cancel,
    "delete": do_delete,
}


def plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, (date, datetime)) else value


def run_json(run: Run) -> dict[str, Any]:
    return {name: plain(value) for name, value in asdict(run).items()}


def show_run(run: Run, as_json: bool, out: TextIO) -> None:
    if as_json:
        out.write(json.dumps(run_json(run)) + "\n")
        return
    fields = run_json(run)
    rows = fields.pop("result")
    if rows is not None:
        fields["rows"] = len(rows)
    table([[name, value] for name, value in fields.items() if value is not None], None, out)


def show_runs(runs: list[Run], as_json: bool, out: TextIO, header: Sequence[str]) -> None:
    if as_json:
        out.write(json.dumps([run_json(run) for run in runs]) + "\n")
        return
    table([[plain(getattr(run, name)) for name in header] for run in runs], header, out)


def table(rows: list[list[Any]], header: Sequence[str] | None, out: TextIO) -> None:
    """Columns padded to their widest cell; empty for None."""
    lines = [list(header)] if header else []
    lines += [["" if cell is None else str(cell) for cell in row] for row in rows]
    if not lines:
        return
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        cells = (cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        out.write("  ".join(cells).rstrip() + "\n")


if __name__ == "__main__":
    sys.exit(main())
