"""The job's final JobFailed when its engine failed: one shape for every path to it.

The verify stage ends a job this way for a whole-job failure, a chunk's failure
(assemble.py) and a failure the retry policy gave up on (retry.py). The engine's own
code is kept: clients branch on the cause, not on which path ended the job.
"""

from __future__ import annotations

from qbus.schemas.events import ExecutionFailed, JobFailed, answer


def engine_failed(failed: ExecutionFailed, detail: str) -> JobFailed:
    """The JobFailed answering ``failed``; ``detail`` follows the engine's name."""
    return answer(
        failed,
        JobFailed,
        "qbus.verify",
        code=failed.code,
        message=f"{failed.engine}: {detail}",
        stage="execute",
    )
