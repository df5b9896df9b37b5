"""Chain fixtures: a real anvil node per test, the anchor contract on it, the verifier key.

The verifier key is anvil's first development key, read from anvil's own output and
handed to qbus through the env secrets provider (``QBUS_SECRET_CHAIN_VERIFIER_KEY``),
the way a deployment hands over its real key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest

from qbus.bus.config import ChainConfig, Config
from qbus.verifier.anvil import AnvilNode
from qbus.verifier.chain import AnchorContract, account_from_key, close_connections

VERIFIER_KEY_VAR = "QBUS_SECRET_CHAIN_VERIFIER_KEY"

__all__ = ["anchor_contract", "anvil", "chain_config", "chain_qbus_config", "verifier_key"]


@pytest.fixture
def anvil(tmp_path: Path) -> Iterator[AnvilNode]:
    with AnvilNode(log_dir=tmp_path / "anvil") as node:
        yield node


@pytest.fixture
def chain_config(anvil: AnvilNode) -> ChainConfig:
    # Small batches and short windows keep the suite fast on 2 cores.
    return ChainConfig(rpc_url=anvil.url, batch_size=16, batch_window=0.3, poll_interval=0.1)


@pytest.fixture
def verifier_key(anvil: AnvilNode, monkeypatch: pytest.MonkeyPatch) -> str:
    key = anvil.dev_keys[0]
    monkeypatch.setenv(VERIFIER_KEY_VAR, key)
    return key


@pytest.fixture
async def anchor_contract(
    chain_config: ChainConfig, verifier_key: str
) -> AsyncIterator[AnchorContract]:
    account = account_from_key(verifier_key)
    address = await AnchorContract.deploy(chain_config, account)
    yield await AnchorContract.connect(chain_config, address, account)
    await close_connections()


@pytest.fixture
def chain_qbus_config(
    config: Config, chain_config: ChainConfig, anchor_contract: AnchorContract
) -> Config:
    """The bus test config with ``[chain]`` pointing at anvil and the deployed contract."""
    return msgspec.structs.replace(
        config, chain=msgspec.structs.replace(chain_config, contract=anchor_contract.address)
    )
