"""What the root ``qbus`` group hands its commands: the loaded config."""

from __future__ import annotations

import click

from qbus.bus.config import Config


def config_of(ctx: click.Context) -> Config:
    """The configuration the root group loaded (``--config``, ``QBUS_*``, ``--url``)."""
    return ctx.find_root().obj["config"]


def url_given(ctx: click.Context) -> bool:
    """Whether the user named a bus (``--url`` or ``QBUS_URL``)."""
    return bool(ctx.find_root().obj["url_given"])
