"""The README's quickstart and Python API example run as written, and every command in docs/
is one the tools accept (its flags parse; its module exists)."""

from __future__ import annotations

import glob
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest
from conftest import ROOT, ports_in_use, script_env
from ray_processes import stop_ray_of_session


def code_blocks(path: str, lang: str) -> list[str]:
    text = open(path, encoding="utf-8").read()
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def run_bash_script(script: str, cwd, env: dict, timeout: float) -> tuple[int, str]:
    """(exit status, stdout and stderr) of `bash -c script` in a session of its own, in the
    environment of conftest.script_env (its own Ray temp dir; `ray stop` stops only its own
    Ray). Afterwards whatever it left running is killed: its process group, then the Ray
    processes of its session, and nothing else on the host."""
    ray_tmp = tempfile.mkdtemp(prefix="rt-", dir="/tmp")  # short: Ray's socket paths are bounded
    proc = subprocess.Popen(
        ["bash", "-c", script],
        cwd=cwd,
        env=script_env(env, ray_tmp),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        stop_ray_of_session(proc.pid)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    return proc.returncode, out


def _section(text: str, title: str) -> str:
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def readme_block(title: str, lang: str) -> str:
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    return re.findall(rf"```{lang}\n(.*?)```", _section(text, title), flags=re.S)[0]


def test_the_readme_fits_one_screen_and_opens_with_the_two_commands():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    assert len(text.splitlines()) <= 150
    first_two = code_blocks(os.path.join(ROOT, "README.md"), "bash")[:2]
    assert "python trainer/run.py" in first_two[0] and "python -m pytest -q" in first_two[1]
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
    assert first_two[1].strip() in ci  # .ci/run runs exactly the README's test command


@pytest.mark.slow
@pytest.mark.ray
def test_quickstart_runs_as_written(tmp_path):
    """The quickstart block in a fresh directory, with a real Ray, a real uvicorn and curl."""
    if not shutil.which("curl"):
        pytest.skip("curl is not installed")
    busy = ports_in_use(6379, 8265, 8000)  # the block uses Ray's and the service's defaults
    if busy:
        pytest.skip(f"ports {busy} are in use on this host: the quickstart would not start")
    # The torch threads a user gets (2 here): the tests run one at a time.
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("OMP_NUM_THREADS", None)
    script = "set -euo pipefail\n" + readme_block("Quickstart", "bash")
    returncode, out = run_bash_script(script, tmp_path, env, timeout=600)
    assert returncode == 0, out[-3000:]
    assert '"fallback":null' in out.replace(" ", "") and '"item":"i' in out.replace(" ", "")
    assert "SUCCEEDED" in out.splitlines()  # the job was followed to its end, not killed
    assert '"model":"jobs/adasir-' in out.replace(" ", "")  # and its model answers
    assert (tmp_path / "runs" / "models" / "demo" / "checkpoint" / "model.pt").is_file()


@pytest.mark.slow
def test_the_readme_python_api_block_runs_on_the_quickstarts_data(tmp_path):
    """The README's Python API block as written, after the quickstart's `adasir prepare`."""
    first = readme_block("Quickstart", "bash").splitlines()[0]
    assert first.startswith("adasir prepare ")
    prep = subprocess.run(
        [sys.executable, "-m", "adasir", *shlex.split(first)[1:]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert prep.returncode == 0, prep.stderr
    api = subprocess.run(
        [sys.executable, "-c", readme_block("Python API", "python")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert api.returncode == 0, api.stderr[-3000:]
    assert (tmp_path / "runs" / "models" / "demo-api" / "checkpoint" / "model.pt").is_file()


def test_the_api_guides_example_runs():
    block = code_blocks(os.path.join(ROOT, "docs", "python-api.md"), "python")[0]
    proc = subprocess.run(
        [sys.executable, "-c", block],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("[(") == 3


def _doc_commands() -> list[list[str]]:
    """Every shell command in the bash blocks of docs/, README.md and benchmarks/ (its index
    and pages), continuation lines joined."""
    commands = []
    for path in [
        os.path.join(ROOT, "README.md"),
        os.path.join(ROOT, "benchmarks", "README.md"),
        *glob.glob(os.path.join(ROOT, "benchmarks", "pages", "*.md")),
        *glob.glob(os.path.join(ROOT, "docs", "*.md")),
    ]:
        for block in code_blocks(path, "bash"):
            for line in block.replace("\\\n", " ").splitlines():
                commands.extend(_simple_commands(line))
    return commands


def _simple_commands(line: str) -> list[list[str]]:
    """A shell line's simple commands: split at `&&`, `;`, `|` and `&` outside quotes, with
    `$(...)` substitutions' own commands among them and comments dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|()")
    lexer.whitespace_split, lexer.commenters = True, "#"
    out, current = [], []
    for token in lexer:
        if token and set(token) <= set(";&|()"):
            out.append(current)
            current = []
        else:
            current.append(token.removeprefix("$"))
    out.append(current)
    return [argv for argv in out if argv and argv[0] != "$"]


def _strip_env(argv: list[str]) -> list[str]:
    while argv and re.match(r"^[A-Z_]+=", argv[0]):
        argv = argv[1:]
    return argv


def test_every_documented_command_is_accepted():
    """`adasir train|prepare|tune|recommend|serve`, `python trainer/*.py` and `python -m
    benchmarks.X` lines parse with the current flags; benchmark modules exist."""
    from trainer.cli.train import build_parser

    checked = 0
    for argv in map(_strip_env, _doc_commands()):
        if argv[:2] in (["adasir", "train"], ["python", "trainer/run.py"]):
            args = build_parser().parse_args(argv[2:])
            assert args is not None
            checked += 1
        elif argv[:2] in (["adasir", "prepare"], ["python", "trainer/prepare.py"]):
            help_out = subprocess.run(
                [sys.executable, "-m", "adasir", "prepare", "--help"],
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout
            for flag in (a.split("=")[0] for a in argv[2:] if a.startswith("--")):
                assert flag in help_out, (flag, argv)
            checked += 1
        elif argv[:2] == ["python", "-m"] and argv[2].startswith("benchmarks."):
            assert os.path.isfile(os.path.join(ROOT, *argv[2].split(".")) + ".py"), argv
            checked += 1
        elif argv[:2] in (["adasir", "tune"], ["python", "trainer/tune.py"]):
            assert os.path.isfile(os.path.join(ROOT, argv[2])), argv
            checked += 1
    assert checked >= 15
