"""The server launchers' failure paths: a child that cannot start says why."""

from __future__ import annotations

from pathlib import Path

import pytest

from qbus.bus.server import NatsServer
from qbus.errors import BusError
from qbus.verifier.anvil import AnvilError, AnvilNode


def test_nats_server_with_a_broken_config_raises_with_its_log(tmp_path: Path):
    conf = tmp_path / "broken.conf"
    conf.write_text("jetstream {\n  max_memory_store: \n")  # unterminated block
    server = NatsServer(tmp_path / "nats", config=conf, start_timeout=10)
    with pytest.raises(BusError, match="nats-server exited at start") as caught:
        server.start()
    assert "Parse error on line 3" in str(caught.value)  # the server's own complaint
    assert not server.running()


def test_anvil_with_a_bad_argument_raises_with_its_output(tmp_path: Path):
    node = AnvilNode(chain_id=-5, log_dir=tmp_path / "anvil", start_timeout=10)
    with pytest.raises(AnvilError, match="anvil exited at start") as caught:
        node.start()
    assert "chain-id" in str(caught.value) or "-5" in str(caught.value)
    assert not node.running()


def test_started_servers_stop_and_report_it(tmp_path: Path):
    with NatsServer(tmp_path / "nats") as server, AnvilNode(log_dir=tmp_path / "a") as node:
        assert server.running() and node.running()
        assert server.url.startswith("nats://127.0.0.1:") and server.port > 0
        assert node.url.startswith("http://127.0.0.1:") and len(node.dev_keys) >= 2
    assert not server.running() and not node.running()
