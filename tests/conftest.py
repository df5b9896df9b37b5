"""Fixtures: a real nats-server per test on a free loopback port, and the stages."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from qbus.bus.config import BusConfig, Config
from qbus.bus.connection import Bus
from qbus.bus.server import NatsServer
from qbus.consumers.pipeline import Pipeline
from tests.chain_fixtures import *  # noqa: F403 - anvil, contract and chain config fixtures
from tests.openbao_fixtures import openbao  # noqa: F401 - the OpenBao dev-server fixture

# Test-only engine plugins (tests/plugins/site/README.md): a dist-info folder on the
# path registers them through the real `qbus.engines` entry point, for this process and
# the stage processes its tests start, never for the venv a user gets.
PLUGIN_SITE = str(Path(__file__).parent / "plugins" / "site")
if PLUGIN_SITE not in sys.path:
    sys.path.insert(0, PLUGIN_SITE)
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (PLUGIN_SITE, os.environ.get("PYTHONPATH", "")) if p
)
# The benchmark scripts import their siblings by name (`python benchmarks/x.py` puts
# benchmarks/ first on the path); tests that reuse a benchmark's code import it so too.
BENCHMARKS = str(Path(__file__).resolve().parent.parent / "benchmarks")
if BENCHMARKS not in sys.path:
    sys.path.append(BENCHMARKS)


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "nats"


@pytest.fixture
def nats_server(store_dir: Path) -> Iterator[NatsServer]:
    with NatsServer(store_dir, port=-1) as server:
        yield server


@pytest.fixture
def config(nats_server: NatsServer, tmp_path: Path) -> Config:
    # Short ack wait so crash tests see redelivery in seconds, not half a minute.
    return Config(
        bus=BusConfig(url=nats_server.url, ack_wait=2.0, max_deliver=5, duplicate_window=60),
        state_dir=str(tmp_path / "state"),
    )


@pytest.fixture
async def bus(config: Config) -> AsyncIterator[Bus]:
    bus = await Bus.connect(config.bus, name="qbus-test")
    await bus.provision()
    yield bus
    await bus.close()


@pytest.fixture
async def pipeline(config: Config, bus: Bus) -> AsyncIterator[Pipeline]:
    async with Pipeline(config) as p:
        yield p
        p.check()


def config_toml(config: Config) -> str:
    """The config as TOML text, for stage processes (``QBUS_CONFIG``)."""
    b = config.bus
    return (
        "[bus]\n"
        f'url = "{b.url}"\nack_wait = {b.ack_wait}\nmax_deliver = {b.max_deliver}\n'
        f"duplicate_window = {b.duplicate_window}\n"
    )
