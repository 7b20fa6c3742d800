"""arps and arpc as a user runs them: real processes, real signals, a real PostgreSQL client."""

from __future__ import annotations

import asyncio
import datetime as dt
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import free_port, units
from tests.relay.conftest import Target

PY = sys.executable
# Programs run in a scratch folder: what they write relative to the working folder (the
# gateway's logging.file, arpc's fallback log folder) stays out of the checkout.
RUN_DIR = tempfile.mkdtemp(prefix="arp-e2e-")


class Proc:
    """A child process whose combined output is read line by line with deadlines."""

    def __init__(self, process: asyncio.subprocess.Process, name: str) -> None:
        self.process = process
        self.name = name
        self.lines: list[str] = []
        self._seen = 0

    @classmethod
    async def start(cls, name: str, *args: str, env: dict[str, str] | None = None) -> Proc:
        process = await asyncio.create_subprocess_exec(
            PY,
            "-m",
            name,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=RUN_DIR,
        )
        return cls(process, name)

    async def expect(self, pattern: str, timeout: float = units(10)) -> re.Match[str]:
        """The first line from here on matching `pattern`; fails with the output so far."""
        regex = re.compile(pattern)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    while self._seen < len(self.lines):
                        line = self.lines[self._seen]
                        self._seen += 1
                        if match := regex.search(line):
                            return match
                    assert self.process.stdout is not None
                    raw = await self.process.stdout.readline()
                    if not raw:
                        raise AssertionError(f"{self.name} exited before printing {pattern!r}")
                    self.lines.append(raw.decode(errors="replace").rstrip("\n"))
        except (TimeoutError, AssertionError) as exc:
            output = "\n".join(self.lines)
            raise AssertionError(f"{self.name}: no line matching {pattern!r}:\n{output}") from exc

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = units(10)) -> int:
        """Signal the process (if it still runs) and return its exit code."""
        if self.process.returncode is None:
            self.process.send_signal(sig)
        return await self.wait_exit(timeout)

    async def wait_exit(self, timeout: float = units(10)) -> int:
        async with asyncio.timeout(timeout):
            assert self.process.stdout is not None
            rest = await self.process.stdout.read()
            self.lines += rest.decode(errors="replace").splitlines()
            return await self.process.wait()


@pytest.fixture
async def procs() -> AsyncIterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for proc in started:
        if proc.process.returncode is None:
            proc.process.kill()
            await proc.process.wait()


FAST = ["--heartbeat-interval", "0.2", "--heartbeat-timeout", "1.5"]


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    """A private home, so the client id and logs land in the test's folder."""
    return {
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
    }


async def start_relay(procs: list[Proc], ports: tuple[int, int, int], *extra: str) -> Proc:
    control, proxy, public = ports
    relay = await Proc.start(
        "arp.relay",
        "--bind", "127.0.0.1",
        "--control-port", str(control),
        "--proxy-port", str(proxy),
        "--public-port", str(public),
        "--pool-size", "2",
        *FAST,
        *extra,
    )  # fmt: skip
    procs.append(relay)
    await relay.expect("arps listening")
    return relay


async def start_client(
    procs: list[Proc], ports: tuple[int, int, int], *args: str, env: dict[str, str]
) -> Proc:
    control, proxy, _ = ports
    client = await Proc.start(
        "arp.client",
        "--control-port", str(control),
        "--proxy-port", str(proxy),
        "--max-backoff", "0.5",
        *FAST,
        *args,
        env=env,
    )  # fmt: skip
    procs.append(client)
    return client


def three_ports() -> tuple[int, int, int]:
    return free_port(), free_port(), free_port()


async def get(url: str) -> tuple[int, str]:
    timeout = aiohttp.ClientTimeout(total=units(10))
    async with aiohttp.ClientSession(timeout=timeout) as http, http.get(url) as response:
        return response.status, await response.text()


async def test_user_flow_prints_url_and_forwards(
    procs: list[Proc], target: Target, home: dict[str, str]
) -> None:
    ports = three_ports()
    relay = await start_relay(procs, ports)
    client = await start_client(procs, ports, "--local-port", str(target.port), env=home)
    match = await client.expect(r"✅ client_id ([0-9A-F]{32}) registered")
    client_id = match.group(1)
    url = (await client.expect(r"🌐 Public URL: (\S+)")).group(1)
    assert url == f"http://127.0.0.1:{ports[2]}/?token={client_id}"
    status, body = await get(url.replace("/?", "/echo/api/x?"))
    assert status == 200 and '"path": "/echo/api/x"' in body
    # The generated id is persisted in the config folder and reused.
    saved = Path(home["XDG_CONFIG_HOME"], "arpc", "client_id").read_text().strip()
    assert saved == client_id
    # arpc writes a daily log file in the data folder.
    today = dt.date.today().isoformat()
    log_file = Path(home["XDG_DATA_HOME"], "arpc", "logs", f"arpc.log.{today}")
    assert log_file.exists() and "registered" in log_file.read_text()
    assert await client.stop() == 0
    assert await relay.stop() == 0


async def test_env_ports_apply_below_flags(procs: list[Proc]) -> None:
    control, proxy, public, flag_public = free_port(), free_port(), free_port(), free_port()
    relay = await Proc.start(
        "arp.relay",
        "--bind", "127.0.0.1",
        "--public-port", str(flag_public),
        env={"CONTROL_PORT": str(control), "PROXY_PORT": str(proxy), "PUBLIC_PORT": str(public)},
    )  # fmt: skip
    procs.append(relay)
    line = (await relay.expect("arps listening")).string
    assert f"control 127.0.0.1:{control}," in line
    assert f"proxy 127.0.0.1:{proxy}," in line
    assert f"public 127.0.0.1:{flag_public}" in line


async def test_bad_flags_fail_with_a_clear_message(procs: list[Proc]) -> None:
    relay = await Proc.start("arp.relay", "--tcp-ports", "9-3")
    procs.append(relay)
    await relay.expect("ports must be 1..65535, low to high")
    assert await relay.wait_exit() == 2
    client = await Proc.start("arp.client", "--client-id", "x")
    procs.append(client)
    await client.expect("forward mode needs --local-port")
    assert await client.wait_exit() == 2


async def test_client_survives_relay_restart(
    procs: list[Proc], target: Target, home: dict[str, str]
) -> None:
    ports = three_ports()
    relay = await start_relay(procs, ports)
    client = await start_client(
        procs, ports, "--local-port", str(target.port), "--client-id", "phoenix", env=home
    )
    await client.expect("✅ client_id phoenix registered")
    assert await relay.stop() == 0
    await client.expect("reconnecting in")
    await asyncio.sleep(units(1))  # the relay is away for a while; the client keeps trying
    assert client.process.returncode is None
    relay = await start_relay(procs, ports)
    await relay.expect("client phoenix registered", timeout=units(10))
    status, _ = await get(f"http://127.0.0.1:{ports[2]}/echo?token=phoenix")
    assert status == 200


async def test_client_killed_mid_transfer_then_back(
    procs: list[Proc], target: Target, home: dict[str, str]
) -> None:
    ports = three_ports()
    await start_relay(procs, ports)
    args = ("--local-port", str(target.port), "--client-id", "victim")
    client = await start_client(procs, ports, *args, env=home)
    await client.expect("registered")
    received = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=units(30))) as http:
        async with http.get(f"http://127.0.0.1:{ports[2]}/blob/{1 << 30}?token=victim") as r:
            with pytest.raises(aiohttp.ClientPayloadError):
                async for chunk in r.content.iter_chunked(1 << 20):
                    received += len(chunk)
                    if received > 4 << 20 and client.process.returncode is None:
                        client.process.kill()  # SIGKILL: no goodbye
        assert received < 1 << 30
        status, body = await get(f"http://127.0.0.1:{ports[2]}/?token=victim")
        assert status == 503 and "offline" in body
        client = await start_client(procs, ports, *args, env=home)
        await client.expect("registered")
        status, _ = await get(f"http://127.0.0.1:{ports[2]}/echo?token=victim")
        assert status == 200


async def test_wrong_secret_exits_with_a_reason(procs: list[Proc], home: dict[str, str]) -> None:
    ports = three_ports()
    await start_relay(procs, ports, "--auth-token", "right")
    client = await start_client(
        procs, ports, "--local-port", "9", "--client-id", "c", "--auth-token", "wrong", env=home
    )
    await client.expect("❌ the relay refused this client: .*--auth-token")
    assert await client.wait_exit() == 2


# -- PostgreSQL through a dedicated TCP port ----------------------------------------------------


def _pg_binary(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name) or ""]
    path = found[-1]
    assert path, f"{name} not installed: run scripts/setup.sh --dev"
    return path


@pytest.fixture(scope="module")
def postgres() -> Iterator[int]:
    """A private PostgreSQL server on a free port, in a temporary folder."""
    root = Path(tempfile.mkdtemp(prefix="arp-pg-"))
    root.chmod(0o755)
    data, port = root / "data", free_port()
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(root, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*as_user, _pg_binary("initdb"), "-D", str(data), "--auth=trust", "-U", "postgres"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
    pg_ctl = [*as_user, _pg_binary("pg_ctl"), "-D", str(data)]
    subprocess.run(
        [*pg_ctl, "-o", options, "-l", str(root / "log"), "-w", "-t", "60", "start"],
        check=True, capture_output=True, timeout=90,
    )  # fmt: skip
    try:
        yield port
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


async def test_psql_through_a_dedicated_port(
    procs: list[Proc], postgres: int, home: dict[str, str]
) -> None:
    ports = three_ports()
    public_tcp = free_port()
    await start_relay(procs, ports, "--tcp-ports", f"{public_tcp}-{public_tcp}")
    client = await start_client(
        procs,
        ports,
        "--local-port", str(postgres),
        "--remote-port", str(public_tcp),
        "--client-id", "pg",
        env=home,
    )  # fmt: skip
    await client.expect(rf"🔌 TCP: 127.0.0.1:{public_tcp} → 127.0.0.1:{postgres}")
    psql = await asyncio.create_subprocess_exec(
        "psql",
        "-h", "127.0.0.1", "-p", str(public_tcp), "-U", "postgres", "-d", "postgres",
        "-tA", "-c", "select 40 + 2", "-c", "select repeat('x', 100000)",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
    )  # fmt: skip
    async with asyncio.timeout(units(30)):
        out, err = await psql.communicate()
    assert psql.returncode == 0, err.decode()
    lines = out.decode().split("\n")
    assert lines[0] == "42"
    assert lines[1] == "x" * 100000


# -- command mode as a user runs it ---------------------------------------------------------------


async def test_command_mode_serves_the_api_and_remote_protocol(
    procs: list[Proc], home: dict[str, str], tmp_path: Path
) -> None:
    import json

    from tests.fakes.install import install_fakes

    fakes = install_fakes(tmp_path / "bin")
    ports = three_ports()
    await start_relay(procs, ports)
    client = await start_client(
        procs,
        ports,
        "--command-mode",
        "--client-id", "agentbox",
        "--data-dir", str(tmp_path / "data"),
        "--command-path", fakes["claude"],
        "--codex-path", str(tmp_path / "no-codex-here"),
        "--remote", "127.0.0.1:0",
        "--enable-mcp", "--mcp-port", "0",
        env=home,
    )  # fmt: skip
    # It says what it can run: each CLI's path and version, or how to install it.
    await client.expect(r"🧰 claude: .*/claude \(2\.1\.197 \(Claude Code\)\)")
    await client.expect(r"🧰 codex: not found; install it with `npm install -g @openai/codex`")
    await client.expect(r"🧩 MCP: http://127\.0\.0\.1:\d+")
    line = await client.expect(r"API on 127\.0\.0\.1:(\d+), remote protocol on 127\.0\.0\.1:(\d+)")
    api_port, remote_port = int(line.group(1)), int(line.group(2))
    await client.expect("✅ client_id agentbox registered")
    # MCP through the relay with the token, by the SDK's own client.
    from mcp import Client as McpClient

    mcp_url = f"http://127.0.0.1:{ports[2]}/mcp?token=agentbox"
    async with McpClient(mcp_url, read_timeout_seconds=units(20)) as mcp:  # type: ignore[arg-type]
        names = {tool.name for tool in (await mcp.list_tools()).tools}
    assert {"start_session", "get_session", "list_history_sessions"} <= names
    base = f"http://127.0.0.1:{ports[2]}"
    timeout = aiohttp.ClientTimeout(total=units(20))
    async with aiohttp.ClientSession(timeout=timeout) as http:
        async with http.post(
            f"{base}/api/sessions?token=agentbox",
            json={"executor": "Claude", "prompt": "say hello", "projectPath": str(tmp_path)},
        ) as response:
            assert response.status == 201, await response.text()
            session_id = (await response.json())["session_id"]
        async with http.get(f"{base}/api/sessions/{session_id}/events?token=agentbox") as events:
            body = await events.text()  # the stream ends when the session does
        assert "event: end" in body or '"completed"' in body, body
        # On its loopback port the API answers only with the token (no other local user,
        # no DNS-rebinding page).
        async with http.get(f"http://127.0.0.1:{api_port}/api/sessions") as response:
            assert response.status == 401
        async with http.get(f"http://127.0.0.1:{api_port}/api/sessions?token=agentbox") as r:
            assert r.status == 200
    # The newline-JSON protocol, as the seed's example client speaks it.
    reader, writer = await asyncio.open_connection("127.0.0.1", remote_port)
    request = {
        "request_id": "r1",
        "input": {"Text": "hello"},
        "config": {"project_path": str(tmp_path)},
    }
    writer.write(json.dumps(request).encode() + b"\n")
    await writer.drain()
    async with asyncio.timeout(units(20)):
        answer = json.loads(await reader.readline())
    writer.close()
    assert answer["request_id"] == "r1" and answer["error"] is None, answer
    assert assert_text(answer["response"])


def assert_text(response: dict[str, object]) -> bool:
    """A Text answer, or a Multi ending in one (a run with tool use)."""
    if "Text" in response:
        return isinstance(response["Text"], str) and bool(response["Text"])
    items = response.get("Multi")
    return isinstance(items, list) and bool(items) and assert_text(items[-1])


async def test_arps_runs_the_gateway_when_asked(procs: list[Proc], tmp_path: Path) -> None:
    from tests.gateway.conftest import RedisServer

    (tmp_path / "redis").mkdir()
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    try:
        ports = three_ports()
        relay = await start_relay(
            procs,
            ports,
            "--with-gateway",
            "--gateway-host",
            "127.0.0.1",
            "--gateway-port",
            "0",
            "--redis-url",
            redis.url,
        )
        port = int((await relay.expect(r"gateway listening on port (\d+)")).group(1))
        timeout = aiohttp.ClientTimeout(total=units(10))
        async with aiohttp.ClientSession(timeout=timeout) as http:
            async with http.post(
                f"http://127.0.0.1:{port}/api/agents/register/", json={"agent_id": "a1"}
            ) as response:
                assert response.status == 201, await response.text()
                assert (await response.json())["token"]
            async with http.get(f"http://127.0.0.1:{port}/api/agents/a1/") as response:
                assert response.status == 200
        assert await relay.stop() == 0
        # A bad configuration value stops start-up with a message naming the key.
        bad = await Proc.start("arp.relay", "--gateway", "--clock-skew", "soon")
        procs.append(bad)
        await bad.expect("clock_skew")
        assert await bad.wait_exit() == 2
    finally:
        redis.stop()


async def test_arpc_as_a_gateway_agent_runs_a_task_into_the_streams(
    procs: list[Proc], tmp_path: Path, home: dict[str, str]
) -> None:
    from tests.fakes.install import install_fakes
    from tests.gateway.conftest import RedisServer

    (tmp_path / "redis").mkdir()
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    try:
        relay = await start_relay(
            procs,
            three_ports(),
            "--with-gateway",
            "--gateway-host",
            "127.0.0.1",
            "--gateway-port",
            "0",
            "--redis-url",
            redis.url,
        )
        port = int((await relay.expect(r"gateway listening on port (\d+)")).group(1))
        base = f"http://127.0.0.1:{port}"
        timeout = aiohttp.ClientTimeout(total=units(20))
        async with aiohttp.ClientSession(timeout=timeout) as http:
            async with http.post(f"{base}/api/agents/register/", json={"agent_id": "a1"}) as r:
                token = (await r.json())["token"]
            token_file = tmp_path / "token"
            token_file.write_text(token)
            fakes = install_fakes(tmp_path / "bin")
            agent = await Proc.start(
                "arp.client",
                "--gateway-url", f"ws://127.0.0.1:{port}",
                "--agent-id", "a1",
                "--agent-token-file", str(token_file),
                "--agent-state-dir", str(tmp_path / "state"),
                "--command-path", fakes["claude"],
                env=home,
            )  # fmt: skip
            procs.append(agent)
            await agent.expect("🤖 agent a1 of gateway")
            async with asyncio.timeout(units(10)):
                while True:  # online once its WebSocket is up
                    async with http.get(f"{base}/api/agents/a1/") as r:
                        if (await r.json()).get("status") == "online":
                            break
                    await asyncio.sleep(0.05)
            task = {
                "task_id": "t1",
                "executor": "claude",
                "prompt": "hi",
                "project_path": str(tmp_path),
            }
            async with http.post(f"{base}/api/agents/a1/tasks/", json=task) as r:
                assert r.status == 202, await r.text()
        client = redis.client()
        async with asyncio.timeout(units(20)):
            while not client.xlen("agent_results"):
                await asyncio.sleep(0.05)
        ((_, fields),) = client.xrange("agent_results")
        assert fields["task_id"] == "t1" and fields["agent_id"] == "a1"
        assert fields["exit_code"] == "0"
        assert client.xlen("agent_logs") > 0
        client.close()
        assert await agent.stop() == 0
    finally:
        redis.stop()
