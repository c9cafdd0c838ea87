"""README.md's walk-through, run from the README's own text: every fenced block after a ``<!-- walkthrough -->``
comment, in order, pasted into one bash as a reader would (from the clone, with no REMEDIATOR_* variable set),
on real parts: the private dockerd the README starts, the daemon, curl and the docker CLI.

Only the README's first line of variables is replaced: the venv (the project's, already made) and a free port.
The directory the README makes with ``mktemp -d`` lands in a private TMPDIR, so whatever a failing run leaves
(dockerd, containerd, shims, the daemon) is found there and stopped by pid."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import textwrap
from pathlib import Path

from helpers import REPO
from realparts.common import Pid, descendants, free_port, pids_mentioning, remove_tree, stop_pids

MARK = "<!-- walkthrough -->"
VARIABLES = "venv=.venv port=9095"


def walkthrough_blocks(readme: str) -> list[str]:
    """The shell blocks marked in ``readme``, dedented as they render (they sit in a numbered list)."""
    blocks = []
    lines = readme.splitlines()
    for i, line in enumerate(lines):
        if line.strip() != MARK:
            continue
        j = i + 1
        while not lines[j].strip():
            j += 1
        fence = re.fullmatch(r"( *)```sh", lines[j])
        assert fence, f"README.md:{j + 1}: a walkthrough mark must be followed by a ```sh block"
        indent = fence.group(1)
        end = lines.index(f"{indent}```", j + 1)
        blocks.append(textwrap.dedent("\n".join(lines[j + 1 : end])) + "\n")
    return blocks


def test_the_marks_find_every_step() -> None:
    blocks = walkthrough_blocks((REPO / "README.md").read_text())
    assert len(blocks) == 6
    assert blocks[0].splitlines()[0] == VARIABLES
    assert "EOF\n" in blocks[1] and blocks[1].count("\nEOF\n") == 1  # the heredoc's end, at column 0
    assert blocks[-1].startswith("kill ")


def _stop_what_is_left(root: Path) -> None:
    """The daemon and dockerd by their pid files, then anything whose command line names ``root``."""
    for pidfile in sorted(root.glob("*/remediator.pid")) + sorted(root.glob("*/dockerd.pid")):
        pid = Pid.of(int(pidfile.read_text().split()[0])) if pidfile.exists() else None
        if pid is not None:
            stop_pids([pid], signal.SIGTERM, grace=10.0)
    shims = pids_mentioning(str(root))
    leftovers = [p for p in map(Pid.of, descendants(shims) + shims) if p is not None]
    if leftovers:
        stop_pids(leftovers, signal.SIGKILL)


def test_the_readme_walkthrough_works_pasted_into_a_fresh_shell() -> None:
    blocks = walkthrough_blocks((REPO / "README.md").read_text())
    venv = REPO / ".venv"
    assert (venv / "bin" / "remediator").exists(), "scripts/dev makes the venv the walk-through uses"
    port = free_port()
    blocks[0] = blocks[0].replace(VARIABLES, f"venv={venv} port={port}", 1)
    # After step 5, before the clean-up: the state as the API tells it, once the last alert is processed.
    probe = textwrap.dedent(
        """\
        for i in $(seq 100); do
            $venv/bin/remediator incidents -o json >$d/incidents.json
            grep -q '"escalated"' $d/incidents.json && break
            sleep 0.2
        done
        echo "== incidents"; cat $d/incidents.json
        echo "== show 1"; $venv/bin/remediator incidents show 1 -o json
        """
    )
    script = "set -euo pipefail\n" + "".join(blocks[:-1]) + probe + blocks[-1]
    bash = shutil.which("bash")
    assert bash
    root = Path(tempfile.mkdtemp(prefix="rw-"))  # short: dockerd's sockets live under it
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("REMEDIATOR_")}
    env["TMPDIR"] = str(root)
    try:
        done = subprocess.run(
            [bash, "-c", script],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=100,
            start_new_session=True,
        )
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    finally:
        _stop_what_is_left(root)
        remove_tree(root)
    out = done.stdout
    assert "database-down" in out and "1 policies valid" in out  # check
    assert "target  container sms-db" in out and "2. act container.restart" in out  # simulate
    assert re.search(r"^sms-db restarted at \d{4}-", out, re.M)
    assert re.search(r"^1 +active +.* database-down +sms-db", out, re.M), out
    assert re.search(r'^remediator_actions_total\{.*action="container.restart".*\} 1\.0$', out, re.M), out
    incidents = json.loads(out.split("== incidents\n", 1)[1].split("== show 1\n", 1)[0])["incidents"]
    by_id = {i["id"]: i for i in incidents}
    assert by_id[1]["status"] == "resolved", by_id
    assert by_id[2]["status"] == "escalated" and by_id[2]["reason"].startswith(
        "refused (cooldown): sms-db was acted on "
    ), by_id[2]
    shown = json.loads(out.split("== show 1\n", 1)[1])
    finished = [e["detail"] for e in shown["timeline"] if e["kind"] == "step_finished"]
    assert [(f["name"], f["status"]) for f in finished][:2] == [
        ("container.logs", "ok"),
        ("container.restart", "ok"),
    ]
    assert "Traceback" not in done.stderr
    assert not root.exists()
