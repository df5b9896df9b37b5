"""Results of the ``sweep`` method: one parametrised IR, many parameter sets, one job."""

from __future__ import annotations

import msgspec


class SweepPoint(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The result at one parameter set of a sweep (same order as ``options.sweep``).

    Attributes:
        counts: Counts at this point when the sweep samples.
        expectations: Expectation of each observable when the job has observables.
    """

    counts: dict[str, int] | None = None
    expectations: list[float] | None = None
