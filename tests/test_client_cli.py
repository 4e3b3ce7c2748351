"""`calculations`, the client's command line, against the real server: each command, its
people's and JSON output, its exit codes, and the progress bar on a terminal only."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path
from typing import Any

import pytest

from calculations_client import cli
from tests.conftest import SMALL_RUN, csv_records, free_port, serve

SCRIPT = Path(sys.executable).with_name("calculations")  # what `pip install ./client` puts
SUBMIT = ["submit", "--start", SMALL_RUN["date_start"], "--fin", SMALL_RUN["date_fin"]]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_submit_wait_get_result_list_for_people_and_for_programs(
    service_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = run(
        capsys, "--url", service_url, *SUBMIT, "--lag", "7", "--wait", "--name", "a"
    )
    assert (code, err) == (0, "")
    lines = dict(line.split(None, 1) for line in out.splitlines())
    assert (lines["status"], lines["name"], lines["rows"]) == ("done", "a", "5")
    calc_id = lines["id"]

    code, out, _ = run(capsys, "get", calc_id, "--url", service_url, "--json")  # options after too
    run_json = json.loads(out)
    assert (code, run_json["id"], run_json["status"]) == (0, int(calc_id), "done")
    assert len(run_json["result"]) == 5

    code, out, _ = run(capsys, "--url", service_url, "result", calc_id, "--json")
    assert (code, json.loads(out)) == (0, run_json["result"])
    code, out, _ = run(capsys, "--url", service_url, "result", calc_id)
    assert out.split("\n")[0].split() == ["date", "liquid", "oil", "water", "wct"]
    assert len(out.strip().splitlines()) == 6
    target = tmp_path / "run.csv"
    code, out, _ = run(capsys, "--url", service_url, "result", calc_id, "--csv", "-o", str(target))
    assert (code, out) == (0, "")
    assert csv_records(target.read_text()) == run_json["result"]

    code, out, _ = run(capsys, "--url", service_url, "--json", "list", "--status", "done")
    assert [one["id"] for one in json.loads(out)] == [int(calc_id)]
    code, out, _ = run(capsys, "--url", service_url, "list")
    assert out.splitlines()[0].split() == ["id", "status", "created_at", "name"]
    assert out.splitlines()[1].split()[:2] == [calc_id, "done"]


def test_list_shows_ten_unless_all(service_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    for _ in range(12):
        assert run(capsys, "--url", service_url, *SUBMIT, "--lag", "7")[0] == 0
    code, out, err = run(capsys, "--url", service_url, "--json", "list")
    assert (code, len(json.loads(out))) == (0, 10)
    assert "--all" in err
    code, out, err = run(capsys, "--url", service_url, "--json", "list", "--all", "--order", "asc")
    ids = [one["id"] for one in json.loads(out)]
    assert (code, err, ids) == (0, "", sorted(ids))
    assert len(ids) == 12


def test_wait_cancel_delete_and_their_exit_codes(
    start_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    url = serve(start_server, KERNEL_DELAY="30")
    code, out, _ = run(capsys, "--url", url, "--json", *SUBMIT, "--lag", "7")
    first = json.loads(out)["id"]
    code, out, _ = run(capsys, "--url", url, "--json", *SUBMIT, "--lag", "7")
    second = json.loads(out)["id"]
    code, out, _ = run(capsys, "--url", url, "cancel", str(second))
    assert code == 0
    assert "cancelled" in out
    code, out, err = run(capsys, "--url", url, "--json", "wait", str(second))
    assert (code, json.loads(out)[0]["status"], err) == (1, "cancelled", "")  # ended, not done
    code, out, err = run(capsys, "--url", url, "cancel", str(second))
    assert code == 1
    assert err.count("\n") == 1
    assert "409 conflict" in err
    code, _, err = run(capsys, "--url", url, "wait", str(first), "--timeout", "0.5")
    assert code == 1
    assert f"run {first} is still running" in err
    code, out, _ = run(capsys, "--url", url, "delete", str(first))
    assert (code, out) == (0, f"run {first} deleted\n")
    code, out, _ = run(capsys, "--url", url, "--json", "delete", str(second))
    assert (code, json.loads(out)) == (0, {"id": second, "deleted": True})
    code, _, err = run(capsys, "--url", url, "get", str(first))
    assert code == 4
    assert err.startswith("calculations: 404 not_found")
    code, _, err = run(capsys, "--url", url, "result", str(second))
    assert code == 4


def test_a_failed_run_exits_1(start_server: Any, capsys: pytest.CaptureFixture[str]) -> None:
    url = serve(start_server, KERNEL_DELAY="5", KERNEL_TIMEOUT="0.5")
    code, out, _ = run(capsys, "--url", url, "--json", *SUBMIT, "--lag", "7", "--wait")
    failed = json.loads(out)
    assert (code, failed["status"]) == (1, "failed")
    assert "time limit" in failed["error"]
    code, _, err = run(capsys, "--url", url, "result", str(failed["id"]))
    assert code == 1
    assert "failed" in err


def test_usage_errors_exit_2(service_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as usage:
        cli.main(["--url", service_url, *SUBMIT])  # no --lag
    assert usage.value.code == 2
    assert "--lag" in capsys.readouterr().err
    code, _, err = run(capsys, "--url", service_url, *SUBMIT, "--lag", "0")
    assert code == 2  # the service's invalid_request: the usage was wrong
    assert err.startswith("calculations: 422 invalid_request: some fields are invalid (lag: ")
    assert err.count("\n") == 1


def test_an_unreachable_service_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, out, err = run(capsys, "--url", url, "--retry-for", "0.5", "get", "1")
    assert (code, out) == (3, "")
    assert err.startswith(f"calculations: unreachable: no answer from {url}")
    assert err.count("\n") == 1


def test_the_token_and_url_come_from_the_environment(start_server: Any) -> None:
    url = serve(start_server, API_TOKEN="s3cret")
    env = {**os.environ, "CALCULATIONS_URL": url, "CALCULATIONS_TOKEN": "s3cret"}
    argv = [str(SCRIPT), "--json", *SUBMIT, "--lag", "7", "--wait"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    assert (done.returncode, json.loads(done.stdout)["status"]) == (0, "done")
    env["CALCULATIONS_TOKEN"] = "wrong"
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.startswith("calculations: 401 unauthorized")


def test_the_progress_bar_shows_on_a_terminal_only(service_url: str) -> None:
    made = [cli_json(service_url, *SUBMIT, "--lag", str(lag)) for lag in (1, 2, 3)]
    ids = [str(json.loads(one)["id"]) for one in made]
    argv = [str(SCRIPT), "--url", service_url, "wait", *ids]
    piped = subprocess.run(argv, capture_output=True, text=True, check=True)
    assert piped.stderr == ""
    assert len(piped.stdout.splitlines()) == 4  # the header and three runs
    seen = on_a_terminal(argv)
    assert "runs ended" in seen
    assert "3/3" in seen


def cli_json(url: str, *argv: str) -> str:
    done = subprocess.run(
        [str(SCRIPT), "--url", url, "--json", *argv], capture_output=True, text=True, check=True
    )
    return done.stdout


def on_a_terminal(argv: list[str]) -> str:
    """What a person sees when they run it in a terminal: stdout and stderr on a pty."""
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))  # 80 columns
    proc = subprocess.Popen(argv, stdin=child, stdout=child, stderr=child)
    os.close(child)
    seen = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # the child closed its end
            break
        if not chunk:
            break
        seen += chunk
    os.close(main)
    assert proc.wait(30) == 0
    return seen.decode(errors="replace")
