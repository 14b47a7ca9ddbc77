"""The bubblewrap sandbox, attacked with real processes through `command/exec` and turns.

Every case runs a real command in a real sandbox (bubblewrap from the Debian package that
.ci/run installs): writes inside and outside the writable roots, into protected paths, reads
outside the workspace, TCP to a listener on 127.0.0.1 with the network on and off, PTYs,
grandchildren that must die with a terminated command, the server's secrets, and a server
whose bubblewrap is missing or unusable.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from codex_trio import sandbox
from codex_trio.client import ClientConnection
from codex_trio.config.shell_env import ShellEnvironmentPolicy, shell_environment_policy
from codex_trio.protocol.errors import INTERNAL_ERROR, RpcError
from codex_trio.protocol.sandbox import DangerFullAccess, ReadOnly, WorkspaceWrite
from codex_trio.server import open_app_server
from codex_trio.settings import ServerSettings
from codex_trio.transport.listen import NoListen
from tests.responses_server import Patch, ResponsesServer, Shell, Text, add_file
from tests.test_command_exec import b64, collect_output, running, wait_gone
from tests.test_turns import collect, completed, find, method_is, start_turn

TIMEOUT = 30
READ_ONLY = {"type": "readOnly"}
FULL_ACCESS = {"type": "dangerFullAccess"}


def workspace_write(**extra: Any) -> dict[str, Any]:
    return {"type": "workspaceWrite", **extra}


#: /tmp and $TMPDIR are writable roots by default; the "outside" cases exclude them.
NO_TMP = {"excludeSlashTmp": True, "excludeTmpdirEnvVar": True}


def sh(script: str, policy: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"command": ["sh", "-c", script], **extra}
    if policy is not None:
        params["sandboxPolicy"] = policy
    return params


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    path = tmp_path / "outside"
    path.mkdir()
    (path / "readable.txt").write_text("outside content\n")
    return path


# ---------------------------------------------------------------------------- filesystem
async def test_the_default_policy_cannot_write_anywhere(client: ClientConnection, workspace: Path) -> None:
    with trio.fail_after(TIMEOUT):
        result = await client.call(
            "command/exec", sh("echo x > made.txt; echo rc=$?; touch /tmp/w12-ro; true", None)
        )
    assert result["exitCode"] == 0  # the write fails inside the command; the command exits normally
    assert "rc=2" in result["stdout"]
    assert "made.txt: Read-only file system" in result["stderr"]
    assert "/tmp/w12-ro': Read-only file system" in result["stderr"]
    assert not (workspace / "made.txt").exists()


@pytest.mark.parametrize("policy", [READ_ONLY, workspace_write(**NO_TMP)])
async def test_a_file_outside_the_workspace_is_readable(
    client: ClientConnection, outside: Path, policy: dict[str, Any]
) -> None:
    with trio.fail_after(TIMEOUT):
        result = await client.call("command/exec", sh(f"cat {outside}/readable.txt", policy))
    assert result == {"exitCode": 0, "stdout": "outside content\n", "stderr": ""}


async def test_workspace_write_allows_the_cwd_and_writable_roots_only(
    client: ClientConnection, workspace: Path, outside: Path, tmp_path: Path
) -> None:
    extra_root = tmp_path / "extra"
    extra_root.mkdir()
    policy = workspace_write(writableRoots=[str(extra_root)], **NO_TMP)
    script = (
        f"echo in > in.txt; echo root > {extra_root}/r.txt; echo out > {outside}/o.txt; echo t > /tmp/w12-t"
    )
    with trio.fail_after(TIMEOUT):
        result = await client.call("command/exec", sh(script, policy))
    assert (workspace / "in.txt").read_text() == "in\n"
    assert (extra_root / "r.txt").read_text() == "root\n"
    assert not (outside / "o.txt").exists()
    assert f"{outside}/o.txt: Read-only file system" in result["stderr"]
    assert "/tmp/w12-t: Read-only file system" in result["stderr"]


async def test_workspace_write_makes_tmp_writable_unless_excluded(
    client: ClientConnection, tmp_path: Path
) -> None:
    target = Path("/tmp") / f"w12-sandbox-{os.getpid()}-{random.randrange(1 << 30)}"
    try:
        with trio.fail_after(TIMEOUT):
            ok = await client.call("command/exec", sh(f"echo t > {target}", workspace_write()))
            refused = await client.call("command/exec", sh(f"echo t > {target}.2", workspace_write(**NO_TMP)))
        assert ok["exitCode"] == 0 and target.read_text() == "t\n"
        assert refused["exitCode"] != 0 and "Read-only file system" in refused["stderr"]
    finally:
        target.unlink(missing_ok=True)


async def test_protected_paths_stay_read_only_and_missing_ones_cannot_be_created(
    client: ClientConnection, workspace: Path
) -> None:
    (workspace / ".git").mkdir()
    (workspace / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    script = (
        "cat .git/HEAD; echo x > .git/config; echo rc=$?; mkdir .codex; echo rc=$?; "
        "echo y > .codex/config.toml; echo rc=$?; echo z > ok.txt; echo rc=$?"
    )
    with trio.fail_after(TIMEOUT):
        result = await client.call("command/exec", sh(script, workspace_write()))
    assert result["stdout"].splitlines() == ["ref: refs/heads/main", "rc=2", "rc=1", "rc=2", "rc=0"]
    assert ".git/config: Read-only file system" in result["stderr"]
    assert not (workspace / ".git" / "config").exists()
    # the empty mount points that kept the missing names occupied are gone again
    assert sorted(os.listdir(workspace)) == [".git", "ok.txt"]


# ---------------------------------------------------------------------------- network
@pytest.fixture
async def listener() -> AsyncIterator[int]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    try:
        yield listeners[0].socket.getsockname()[1]
    finally:
        for each in listeners:
            await each.aclose()


def connect_code(port: int) -> str:
    return (
        "import os, socket\n"
        "print('flag', os.environ.get('CODEX_SANDBOX_NETWORK_DISABLED'))\n"
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=5).close()\n"
        "    print('connected')\n"
        "except OSError as exc:\n"
        "    print('refused', exc)\n"
    )


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (READ_ONLY, "flag 1\nrefused [Errno 1] Operation not permitted\n"),
        (workspace_write(), "flag 1\nrefused [Errno 1] Operation not permitted\n"),
        ({"type": "readOnly", "networkAccess": True}, "flag None\nconnected\n"),
        (workspace_write(networkAccess=True), "flag None\nconnected\n"),
        (FULL_ACCESS, "flag None\nconnected\n"),
    ],
)
async def test_tcp_to_loopback_follows_network_access(
    client: ClientConnection, listener: int, policy: dict[str, Any], expected: str
) -> None:
    with trio.fail_after(TIMEOUT):
        result = await client.call(
            "command/exec",
            {"command": [sys.executable, "-c", connect_code(listener)], "sandboxPolicy": policy},
        )
    assert result["stdout"] == expected


async def test_network_off_still_allows_unix_socket_pairs_but_not_unix_connects(
    client: ClientConnection,
) -> None:
    code = (
        "import socket\n"
        "a, b = socket.socketpair()\n"
        "import os; os.write(a.fileno(), b'pair'); print(os.read(b.fileno(), 4).decode())\n"
        "try:\n"
        "    socket.socket(socket.AF_UNIX).connect('/nonexistent')\n"
        "except OSError as exc:\n"
        "    print(exc.errno)\n"
    )
    with trio.fail_after(TIMEOUT):
        result = await client.call("command/exec", {"command": [sys.executable, "-c", code]})
    assert result["stdout"] == "pair\n1\n"


# ---------------------------------------------------------------------------- processes
async def test_a_pty_works_inside_the_sandbox_with_resize_and_stdin(client: ClientConnection) -> None:
    script = (
        "import os, signal\n"
        "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGWINCH})\n"
        "print('ready', os.isatty(0), *os.get_terminal_size(0), flush=True)\n"
        "signal.sigwait({signal.SIGWINCH})\n"
        "print('winch', *os.get_terminal_size(0), flush=True)\n"
        "print('got', input(), flush=True)\n"
        "open('w', 'w')\n"
    )
    params = {
        "command": [sys.executable, "-c", script],
        "processId": "pty",
        "tty": True,
        "sandboxPolicy": READ_ONLY,
    }
    with trio.fail_after(TIMEOUT):
        async with running(client, params) as pending:
            await collect_output(client, "pty", b"ready True 80 24")
            await client.call("command/exec/resize", {"processId": "pty", "size": {"rows": 40, "cols": 100}})
            await collect_output(client, "pty", b"winch 100 40")
            await client.call("command/exec/write", {"processId": "pty", "deltaBase64": b64("typed\n")})
            output = await collect_output(client, "pty", b"Read-only file system")
            result = await pending.result()
    assert b"got typed" in output
    assert result["exitCode"] == 1  # the write raised: the sandbox holds on a PTY too


def processes_with(marker: str) -> list[int]:
    """Host pids whose command line contains `marker`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        found.append(int(entry))
            except OSError:
                continue
    return found


def grandchild_script(marker: str) -> str:
    """A command whose grandchild leaves the process group (setsid) and would outlive a killpg."""
    return f"setsid sh -c 'echo up; exec sleep {marker}' & sleep {marker}1"


def new_marker() -> str:
    return f"31{random.randrange(10**6, 10**7)}"


@pytest.mark.parametrize("policy", [READ_ONLY, workspace_write()])
async def test_terminate_kills_everything_in_the_sandbox(
    client: ClientConnection, policy: dict[str, Any]
) -> None:
    marker = new_marker()
    params = sh(
        grandchild_script(marker), policy, processId="gc", streamStdoutStderr=True, disableTimeout=True
    )
    with trio.fail_after(TIMEOUT):
        async with running(client, params) as pending:
            await collect_output(client, "gc", b"up")
            pids = processes_with(marker)
            assert len(pids) >= 3  # bwrap, its init, the shell, both sleeps
            await client.call("command/exec/terminate", {"processId": "gc"})
            assert (await pending.result())["exitCode"] == 137
        for pid in pids:
            await wait_gone(pid)
    assert processes_with(marker) == []


async def test_a_timeout_kills_the_sandbox(client: ClientConnection) -> None:
    marker = new_marker()
    with trio.fail_after(TIMEOUT):
        result = await client.call("command/exec", sh(grandchild_script(marker), READ_ONLY, timeoutMs=500))
        assert result["exitCode"] == 124
        for pid in processes_with(marker):
            await wait_gone(pid)


async def test_stdin_streams_into_a_sandboxed_command(client: ClientConnection) -> None:
    params = sh("cat; echo end", READ_ONLY, processId="in", streamStdin=True)
    with trio.fail_after(TIMEOUT):
        async with running(client, params) as pending:
            await client.call(
                "command/exec/write", {"processId": "in", "deltaBase64": b64("abc\n"), "closeStdin": True}
            )
            result = await pending.result()
    assert result == {"exitCode": 0, "stdout": "abc\nend\n", "stderr": ""}


# ---------------------------------------------------------------------------- secrets
@pytest.fixture
def secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "OPENAI_API_KEY": "sk-w12",
        "GH_TOKEN": "ghp-w12",
        "W12_CLIENT_SECRET": "s-w12",
        "AWS_SECRET_ACCESS_KEY": "aws-w12",
        "W12_PLAIN": "plain",
    }.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize("policy", [READ_ONLY, FULL_ACCESS])
async def test_secrets_in_the_environment_stay_out_of_commands(
    client: ClientConnection, secrets_env: None, policy: dict[str, Any]
) -> None:
    with trio.fail_after(TIMEOUT):
        result = await client.call("command/exec", {"command": ["env"], "sandboxPolicy": policy})
        explicit = await client.call(
            "command/exec", {"command": ["env"], "sandboxPolicy": policy, "env": {"GH_TOKEN": "given"}}
        )
    assert "W12_PLAIN=plain" in result["stdout"]
    for leaked in ("sk-w12", "ghp-w12", "s-w12", "aws-w12"):
        assert leaked not in result["stdout"]
    assert "GH_TOKEN=given" in explicit["stdout"]  # an explicit env in the request wins


async def test_shell_environment_policy_from_config(
    client: ClientConnection, codex_home: Path, secrets_env: None
) -> None:
    (codex_home / "config.toml").write_text(
        "[shell_environment_policy]\n"
        "ignore_default_excludes = true\n"
        'exclude = ["AWS_*"]\n'
        'set = { W12_SET = "yes" }\n'
    )
    with trio.fail_after(TIMEOUT):
        result = await client.call("command/exec", {"command": ["env"]})
    assert "GH_TOKEN=ghp-w12" in result["stdout"] and "W12_SET=yes" in result["stdout"]
    assert "aws-w12" not in result["stdout"]


def test_shell_environment_policy_rules() -> None:
    environ = {"PATH": "/bin", "HOME": "/h", "MY_KEY": "k", "Api_Token": "t", "FOO": "f", "BAR": "b"}
    assert ShellEnvironmentPolicy().apply(environ) == {"PATH": "/bin", "HOME": "/h", "FOO": "f", "BAR": "b"}
    assert ShellEnvironmentPolicy(inherit="core").apply(environ) == {"PATH": "/bin", "HOME": "/h"}
    assert ShellEnvironmentPolicy(inherit="none", set=(("A", "1"),)).apply(environ) == {"A": "1"}
    assert ShellEnvironmentPolicy(ignore_default_excludes=True, exclude=("b*",)).apply(environ) == {
        "PATH": "/bin",
        "HOME": "/h",
        "MY_KEY": "k",
        "Api_Token": "t",
        "FOO": "f",
    }
    # include_only runs last, after `set`
    only = ShellEnvironmentPolicy(include_only=("PATH", "x*"), set=(("XY", "1"), ("Z", "2")))
    assert only.apply(environ) == {"PATH": "/bin", "XY": "1"}
    parsed = shell_environment_policy(
        {"shell_environment_policy": {"inherit": "core", "include_only": ["PATH"], "exclude": "bad"}}
    )
    assert parsed == ShellEnvironmentPolicy(inherit="core", include_only=("PATH",))


async def test_credentials_and_secret_files_are_unreadable_inside_the_sandbox(
    codex_home: Path, tmp_path: Path, server_settings: ServerSettings
) -> None:
    (codex_home / "auth.json").write_text('{"OPENAI_API_KEY":"sk-file"}')
    token = tmp_path / "ws-token"
    token.write_text("capability-token")
    settings = ServerSettings(
        codex_home=codex_home, listen=NoListen(), cwd=server_settings.cwd, secret_files=(token,)
    )
    script = f"cat {codex_home}/auth.json; cat {token}; echo done"
    async with open_app_server(settings) as server:
        client = await server.connect()
        await client.initialize("pytest")
        with trio.fail_after(TIMEOUT):
            confined = await client.call("command/exec", sh(script, workspace_write()))
            unconfined = await client.call("command/exec", sh(script, FULL_ACCESS))
        await client.aclose()
    assert confined["stdout"] == "done\n"
    assert (
        "auth.json: Permission denied" in confined["stderr"]
        and "ws-token: Permission denied" in confined["stderr"]
    )
    assert "sk-file" in unconfined["stdout"]  # dangerFullAccess means the server's own rights


# ---------------------------------------------------------------------------- no bubblewrap
@pytest.fixture(params=["missing", "unusable"])
def broken_bwrap(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "missing":
        return str(tmp_path / "no-such-bwrap")
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    return str(fake)


async def test_without_bubblewrap_the_server_warns_and_refuses_to_run_unconfined(
    server_settings: ServerSettings, broken_bwrap: str
) -> None:
    settings = ServerSettings(
        codex_home=server_settings.codex_home, listen=NoListen(), cwd=server_settings.cwd, bwrap=broken_bwrap
    )
    async with open_app_server(settings) as server:
        client = await server.connect()
        with trio.fail_after(TIMEOUT):
            await client.initialize("pytest")
            warning = await client.receive()
            assert warning["method"] == "configWarning"
            assert "bubblewrap" in warning["params"]["summary"] and warning["params"]["details"] is None
            assert (await client.receive())["method"] == "remoteControl/status/changed"
            with pytest.raises(RpcError) as refused:
                await client.call("command/exec", sh("echo hi > f", READ_ONLY))
            assert refused.value.code == INTERNAL_ERROR
            assert refused.value.message.startswith("failed to spawn command: sandbox unavailable: ")
            assert await client.call("command/exec", sh("echo hi", FULL_ACCESS)) == {
                "exitCode": 0,
                "stdout": "hi\n",
                "stderr": "",
            }
        await client.aclose()
    assert not (server_settings.cwd / "f").exists()


async def test_the_bubblewrap_probe_runs_once_for_concurrent_callers_and_again_after_a_cancelled_one(
    tmp_path: Path,
) -> None:
    """The server starts the probe beside its own start-up and `initialize` asks for it too:
    one bwrap run serves both; a probe cancelled half way leaves no answer cached."""
    from codex_trio.sandbox_support import check_support

    runs = tmp_path / "runs"
    gate = tmp_path / "gate"
    fake = tmp_path / "bwrap"
    fake.write_text(f"#!/bin/sh\necho run >> {runs}\nwhile [ ! -e {gate} ]; do sleep 0.01; done\nexit 0\n")
    fake.chmod(0o755)
    with trio.fail_after(TIMEOUT):
        with trio.move_on_after(0.5):
            await check_support(str(fake))  # cancelled while bwrap waits for the gate
        gate.touch()
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(check_support, str(fake))
        support = await check_support(str(fake))
    assert support.usable
    assert runs.read_text().count("run") == 2


async def test_a_bubblewrap_that_hangs_is_reported_unusable_after_the_probe_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Start-up waits for the probe: a hung bwrap must not hang the server, and the hung
    process is killed, not left behind."""
    from codex_trio import sandbox_support

    pid_file = tmp_path / "pid"
    fake = tmp_path / "bwrap"
    fake.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 300\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sandbox_support, "PROBE_TIMEOUT", 0.5)
    with trio.fail_after(TIMEOUT):
        support = await sandbox_support.check_support(str(fake))
    assert not support.usable
    assert support.problem is not None and "took more than 0.5s" in support.problem
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)


# ---------------------------------------------------------------------------- pure parts
def test_can_write_follows_the_policy(tmp_path: Path) -> None:
    cwd = tmp_path / "ws"
    (cwd / ".git").mkdir(parents=True)
    policy = WorkspaceWrite(**{"exclude_slash_tmp": True, "exclude_tmpdir_env_var": True})
    assert sandbox.can_write(cwd / "a.txt", policy, cwd)
    assert sandbox.can_write(cwd / "sub" / ".git" / "x", policy, cwd)  # only the top of a root
    assert not sandbox.can_write(cwd / ".git" / "config", policy, cwd)
    assert not sandbox.can_write(cwd / ".codex" / "config.toml", policy, cwd)
    assert not sandbox.can_write(tmp_path / "elsewhere.txt", policy, cwd)
    assert not sandbox.can_write(cwd / "a.txt", ReadOnly(), cwd)


def test_the_network_filter_is_a_whole_bpf_program() -> None:
    program = sandbox.network_filter("x86_64")
    assert program is not None and len(program) % 8 == 0
    assert sandbox.network_filter("sparc") is None


def test_denials_are_recognised_from_the_output() -> None:
    assert sandbox.looks_like_denial(1, "sh: 1: cannot create x: Read-only file system")
    assert sandbox.looks_like_denial(1, "PermissionError: [Errno 1] Operation not permitted")
    assert not sandbox.looks_like_denial(0, "Read-only file system")
    assert not sandbox.looks_like_denial(2, "No such file or directory")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root to become nobody")
def test_an_unprivileged_user_gets_the_same_sandbox() -> None:
    """CI runs as root; a developer does not. The same bwrap command line must hold for `nobody`."""
    bwrap = shutil.which("bwrap")
    assert bwrap is not None, "bubblewrap is installed by .ci/run"
    workspace = Path(tempfile.mkdtemp(prefix="w12-nobody-", dir="/tmp"))
    try:
        os.chown(workspace, 65534, 65534)
        outputs = {}
        for policy in (ReadOnly(), WorkspaceWrite(exclude_slash_tmp=True, exclude_tmpdir_env_var=True)):
            program = sandbox.network_filter()
            assert program is not None
            read_end, write_end = os.pipe()
            os.write(write_end, program)
            os.close(write_end)
            script = (
                "echo x > f && echo wrote; id -u; python3 -c 'import socket; socket.socket()' 2>&1 | tail -1"
            )
            argv, _ = sandbox.bwrap_argv(
                sandbox.Confinement(bwrap, policy),
                ["sh", "-c", script],
                workspace,
                tty=False,
                seccomp_fd=read_end,
            )
            try:
                result = subprocess.run(
                    ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv],
                    cwd=workspace,
                    capture_output=True,
                    text=True,
                    timeout=60,
                    pass_fds=(read_end,),
                )
            finally:
                os.close(read_end)
            outputs[policy.type] = result.stdout.splitlines()
        assert outputs["readOnly"] == ["65534", "PermissionError: [Errno 1] Operation not permitted"]
        assert outputs["workspaceWrite"] == [
            "wrote",
            "65534",
            "PermissionError: [Errno 1] Operation not permitted",
        ]
        assert (workspace / "f").read_text() == "x\n"
    finally:
        shutil.rmtree(workspace)


# ---------------------------------------------------------------------------- turns
# (`model`, the scripted Responses server on 127.0.0.1, comes from conftest.py)
@pytest.fixture
async def rpc(codex_home: Path, model: ResponsesServer, client: ClientConnection) -> ClientConnection:
    (codex_home / "config.toml").write_text(model.config_toml())
    return client


async def turn_thread(rpc: ClientConnection, workspace: Path, sandbox_mode: str, approval: str) -> str:
    params = {"cwd": str(workspace), "sandbox": sandbox_mode, "approvalPolicy": approval}
    result = await rpc.call("thread/start", params)
    return str(result["thread"]["id"])


async def start_confined_turn(rpc: ClientConnection, thread_id: str, prompt: str, **extra: Any) -> str:
    """A turn under workspace-write without /tmp, so the test's tmp_path is outside the roots."""
    params = {
        **extra,
        "threadId": thread_id,
        "input": [{"type": "text", "text": prompt, "text_elements": []}],
        "sandboxPolicy": workspace_write(**NO_TMP),
    }
    return str((await rpc.call("turn/start", params))["turn"]["id"])


def command_items(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m["params"]["item"] for m in find(events, "item/completed", "commandExecution")]


async def test_on_request_runs_plain_commands_sandboxed_without_asking(
    rpc: ClientConnection, model: ResponsesServer, workspace: Path, outside: Path, listener: int
) -> None:
    script = f"echo in > in.txt; echo out > {outside}/o.txt; echo g > .git/x; echo rc=$?"
    (workspace / ".git").mkdir()
    (outside / "net.py").write_text(connect_code(listener))
    with trio.fail_after(TIMEOUT):
        thread_id = await turn_thread(rpc, workspace, "workspace-write", "on-request")
        model.enqueue(Shell(script), Shell(f"{sys.executable} {outside}/net.py"), Text("done"))
        turn_id = await start_confined_turn(rpc, thread_id, "write things")
        events = await collect(rpc, completed(turn_id))
    assert not find(events, "item/commandExecution/requestApproval")
    assert (workspace / "in.txt").read_text() == "in\n"
    assert not (outside / "o.txt").exists() and not (workspace / ".git" / "x").exists()
    first, second = command_items(events)
    assert "o.txt: Read-only file system" in first["aggregatedOutput"]
    assert ".git/x: Read-only file system" in first["aggregatedOutput"]
    assert "refused [Errno 1] Operation not permitted" in second["aggregatedOutput"]


async def test_the_default_read_only_sandbox_holds_in_a_turn_under_never(
    rpc: ClientConnection, model: ResponsesServer, workspace: Path
) -> None:
    with trio.fail_after(TIMEOUT):
        thread_id = await turn_thread(rpc, workspace, "read-only", "never")
        model.enqueue(Shell("echo x > made.txt", extra={"tty": True}), Text("done"))
        turn_id = await start_turn(rpc, thread_id, "try")
        events = await collect(rpc, completed(turn_id))
    assert not (workspace / "made.txt").exists()
    (item,) = command_items(events)
    assert "Read-only file system" in item["aggregatedOutput"] and item["status"] == "failed"


async def test_require_escalated_asks_and_runs_unconfined_once_approved(
    rpc: ClientConnection, model: ResponsesServer, workspace: Path, outside: Path
) -> None:
    call = Shell(
        f"echo out > {outside}/o.txt",
        extra={"sandbox_permissions": "require_escalated", "justification": "needs to write outside"},
    )
    with trio.fail_after(TIMEOUT):
        thread_id = await turn_thread(rpc, workspace, "workspace-write", "on-request")
        model.enqueue(call, Text("done"))
        turn_id = await start_turn(rpc, thread_id, "escalate")
        request = (await collect(rpc, method_is("item/commandExecution/requestApproval")))[-1]
        assert request["params"]["reason"] == "needs to write outside"
        await rpc.respond(request["id"], {"decision": "accept"})
        await collect(rpc, completed(turn_id))
    assert (outside / "o.txt").read_text() == "out\n"


@pytest.mark.parametrize("decision", ["accept", "decline"])
async def test_on_failure_offers_an_unsandboxed_retry(
    rpc: ClientConnection, model: ResponsesServer, workspace: Path, outside: Path, decision: str
) -> None:
    with trio.fail_after(TIMEOUT):
        # thread/start refuses `on-failure` (as the reference does); turn/start and config take it
        thread_id = await turn_thread(rpc, workspace, "workspace-write", "on-request")
        model.enqueue(Shell(f"echo out > {outside}/o.txt"), Text("done"))
        turn_id = await start_confined_turn(rpc, thread_id, "write outside", approvalPolicy="on-failure")
        request = (await collect(rpc, method_is("item/commandExecution/requestApproval")))[-1]
        assert request["params"]["reason"] == "command failed; retry without sandbox?"
        await rpc.respond(request["id"], {"decision": decision})
        events = await collect(rpc, completed(turn_id))
    (item,) = command_items(events)
    if decision == "accept":
        assert (outside / "o.txt").read_text() == "out\n" and item["status"] == "completed"
    else:
        assert not (outside / "o.txt").exists() and item["status"] == "failed"
        assert "Read-only file system" in item["aggregatedOutput"]


async def test_a_thread_unload_kills_its_sandboxed_sessions_and_their_grandchildren(
    rpc: ClientConnection, model: ResponsesServer, workspace: Path
) -> None:
    marker = new_marker()
    with trio.fail_after(TIMEOUT):
        thread_id = await turn_thread(rpc, workspace, "workspace-write", "never")
        # the call yields while the command runs on: the session outlives the call
        model.enqueue(Shell(grandchild_script(marker), extra={"yield_time_ms": 3000}), Text("left running"))
        turn_id = await start_turn(rpc, thread_id, "background")
        events = await collect(rpc, completed(turn_id))
        deltas = find(events, "item/commandExecution/outputDelta")
        assert "up" in "".join(m["params"]["delta"] for m in deltas)  # the grandchild is running
        assert (
            "Process running with session ID"
            in model.posts[1].items_of_type("function_call_output")[0]["output"]
        )
        pids = processes_with(marker)
        await rpc.call("thread/archive", {"threadId": thread_id})
        for pid in pids:
            await wait_gone(pid)
    assert processes_with(marker) == []


async def test_apply_patch_respects_the_writable_roots(
    rpc: ClientConnection, model: ResponsesServer, workspace: Path
) -> None:
    (workspace / ".git").mkdir()
    protected = "*** Begin Patch\n*** Add File: .git/hooks/post-checkout\n+#!/bin/sh\n*** End Patch\n"
    with trio.fail_after(TIMEOUT):
        thread_id = await turn_thread(rpc, workspace, "workspace-write", "never")
        model.enqueue(Patch(add_file("ok.txt", "fine")), Patch(protected), Text("done"))
        turn_id = await start_turn(rpc, thread_id, "patch")
        await collect(rpc, completed(turn_id))
    assert (workspace / "ok.txt").read_text() == "fine\n"
    assert not (workspace / ".git" / "hooks").exists()
    output = model.posts[2].items_of_type("custom_tool_call_output")[-1]["output"]
    assert output == "patch rejected: writing outside of the project; rejected by user approval settings"


async def test_the_workspace_write_table_of_config_shapes_the_thread_sandbox(
    rpc: ClientConnection, model: ResponsesServer, workspace: Path, tmp_path: Path
) -> None:
    extra_root = tmp_path / "extra"
    extra_root.mkdir()
    table = {"writable_roots": [str(extra_root)], "exclude_slash_tmp": True, "exclude_tmpdir_env_var": True}
    with trio.fail_after(TIMEOUT):
        started = await rpc.call(
            "thread/start",
            {
                "cwd": str(workspace),
                "sandbox": "workspace-write",
                "approvalPolicy": "never",
                "config": {"sandbox_workspace_write": table},
            },
        )
        assert started["sandbox"] == {
            "type": "workspaceWrite",
            "writableRoots": [str(extra_root)],
            "networkAccess": False,
            "excludeTmpdirEnvVar": True,
            "excludeSlashTmp": True,
        }
        model.enqueue(Shell(f"echo r > {extra_root}/r.txt; echo o > {tmp_path}/o.txt"), Text("done"))
        turn_id = await start_turn(rpc, str(started["thread"]["id"]), "write")
        await collect(rpc, completed(turn_id))
    assert (extra_root / "r.txt").read_text() == "r\n"
    assert not (tmp_path / "o.txt").exists()


def test_the_ws_auth_secret_files_are_kept_from_sandboxed_commands(tmp_path: Path) -> None:
    from codex_trio.cli import build_parser, settings_from_args

    token = tmp_path / "token"
    token.write_text("capability")
    args = build_parser().parse_args(
        ["--listen", "ws://127.0.0.1:0", "--ws-auth", "capability-token", "--ws-token-file", str(token)]
    )
    settings = settings_from_args(args)
    assert settings.secret_files == (token,)
    assert token in sandbox.hidden_paths(settings)
    assert settings.codex_home / "auth.json" in sandbox.hidden_paths(settings)


async def test_without_bubblewrap_turns_ask_before_commands_and_never_refuses(
    server_settings: ServerSettings, model: ResponsesServer, tmp_path: Path
) -> None:
    settings = ServerSettings(
        codex_home=server_settings.codex_home,
        listen=NoListen(),
        cwd=server_settings.cwd,
        bwrap=str(tmp_path / "no-such-bwrap"),
    )
    (settings.codex_home / "config.toml").write_text(model.config_toml())
    workspace = settings.cwd
    async with open_app_server(settings) as server:
        rpc = await server.connect()
        with trio.fail_after(TIMEOUT):
            await rpc.initialize("pytest")
            asking = await turn_thread(rpc, workspace, "workspace-write", "on-request")
            model.enqueue(Shell("echo x > asked.txt"), Text("done"))
            turn_id = await start_turn(rpc, asking, "write")
            request = (await collect(rpc, method_is("item/commandExecution/requestApproval")))[-1]
            await rpc.respond(request["id"], {"decision": "accept"})
            await collect(rpc, completed(turn_id))
            refusing = await turn_thread(rpc, workspace, "workspace-write", "never")
            model.enqueue(Shell("echo x > refused.txt"), Text("done"))
            turn_id = await start_turn(rpc, refusing, "write")
            events = await collect(rpc, completed(turn_id))
        await rpc.aclose()
    assert (workspace / "asked.txt").exists()  # a person allowed it to run unconfined
    assert not (workspace / "refused.txt").exists()
    assert not find(events, "item/commandExecution/requestApproval")
    output = model.posts[-1].items_of_type("function_call_output")[-1]["output"]
    assert output.startswith("exec_command failed: sandbox unavailable: Codex could not find bubblewrap")


def test_policies_are_read_from_every_form_and_never_loosened() -> None:
    assert sandbox.policy_of(None) == ReadOnly()
    assert sandbox.policy_of({"type": "workspaceWrite", "networkAccess": True}) == WorkspaceWrite(
        network_access=True
    )
    assert sandbox.policy_of({"type": "workspace-write"}) == ReadOnly()  # unreadable: the strictest
    assert sandbox.policy_from_config({"sandbox_mode": "workspace-write"}) == WorkspaceWrite()
    assert sandbox.policy_from_config({}) == ReadOnly()
    assert sandbox.policy_from_profile(":danger-full-access") == DangerFullAccess()
