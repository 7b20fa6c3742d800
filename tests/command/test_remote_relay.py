"""The remote protocol through the relay: a client's dedicated public TCP port, spliced to it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from arp.client.config import Target
from arp.command.remote import RemoteConfig, RemoteServer
from arp.command.remote_protocol import Defaults
from arp.command.server import CommandServer
from tests.command.sessions_support import fake_config
from tests.command.test_remote_functional import SeedClient
from tests.conftest import free_port, units
from tests.relay.conftest import StackFactory, make_stack, target  # noqa: F401 (fixtures)


async def test_one_request_through_the_relay_dedicated_tcp_port(
    make_stack: StackFactory,  # noqa: F811
    tmp_path: Path,
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    async with CommandServer(fake_config(tmp_path)) as command:
        config = RemoteConfig(defaults=Defaults(executor="codex", project_path=str(project)))
        async with RemoteServer(config, command.manager, command.history) as remote:
            public_tcp = free_port()
            stack = await make_stack(client_id=None, tcp_ports=range(public_tcp, public_tcp + 1))
            client = await stack.start_client(
                "agent", tcp_targets={public_tcp: Target("127.0.0.1", remote.port)}
            )
            assert client.last_result is not None and client.last_result.tcp_ports == [public_tcp]
            sock = SeedClient(public_tcp)
            try:
                answer = await asyncio.wait_for(
                    asyncio.to_thread(
                        sock.request,
                        {"request_id": "via-relay", "input": {"Text": "你好 events=1"}},
                    ),
                    units(20),
                )
            finally:
                sock.close()
    assert answer["request_id"] == "via-relay"
    assert answer["error"] is None
    assert answer["response"]["Multi"][-1] == {"Text": "piece 0"}
    assert answer["token_usage"] == {
        "prompt_tokens": 30,
        "completion_tokens": 40,
        "total_tokens": 70,
    }
