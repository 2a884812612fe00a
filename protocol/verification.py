"""Verified execution by commit-reveal: how ``Count`` untrusted nodes agree on one result.

Rules, for a job with ``Verification: {Mode: Deterministic, Confidence: K}``:

1. **Digest.** A node that ran the job hashes its canonical result (``result_digest``): the
   exit code, the SHA-256 of stdout and stderr, and every output file's path, size and
   SHA-256, sorted by path. Where the result was published (a CID, an S3 key) is not part
   of it: that differs from node to node for the same bytes.
2. **Commit.** It sends its requester only ``commitment_seal(node, execution, digest)``
   and publishes nothing. The seal binds the digest to the node and the execution, so a
   node that copies another's seal commits to a digest it cannot reveal as its own.
3. **Reveal.** Once every execution the job needs has committed, the requester asks each
   for its result record; the record's digest must open the node's seal
   (``opens_seal``), or the execution fails. Nothing was published before every seal was
   in, so there was nothing to copy.
4. **Verdict.** ``tally`` groups the revealed digests; a group of at least K wins. K is a
   strict majority (``protocol.spec_parser``), so at most one group can.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import codec

if TYPE_CHECKING:
    from .messages import ResultRecord

__all__ = ["Tally", "commitment_seal", "opens_seal", "record_digest", "result_digest", "tally"]

VERIFIED = "Verified"
NO_CONSENSUS = "NoConsensus"


def result_digest(exit_code: int, stdout_sha256: str, stderr_sha256: str,
                  outputs: Iterable[tuple[str, int, str]]) -> str:
    """SHA-256 (hex) of a result's canonical encoding; ``outputs`` is (path, size, sha256)."""
    canonical = codec.encode({
        "exit_code": exit_code,
        "stdout_sha256": stdout_sha256,
        "stderr_sha256": stderr_sha256,
        "outputs": sorted([path, size, sha256] for path, size, sha256 in outputs),
    })
    return hashlib.sha256(b"bacnode/1 result\0" + canonical).hexdigest()


def record_digest(record: ResultRecord) -> str:
    """``result_digest`` of a signed result record."""
    return result_digest(record.exit_code, record.stdout_sha256, record.stderr_sha256,
                         ((e.path, e.size, e.sha256) for e in record.outputs))


def commitment_seal(node_id: str, execution_id: str, digest: str) -> str:
    """SHA-256 (hex) of node ‖ execution ‖ digest, NUL-separated: what a node commits to."""
    material = "\0".join(("bacnode/1 commitment", node_id, execution_id, digest)).encode()
    return hashlib.sha256(material).hexdigest()


def opens_seal(seal: str, node_id: str, execution_id: str, digest: str) -> bool:
    """Whether revealing ``digest`` opens the seal ``node_id`` committed for ``execution_id``."""
    return commitment_seal(node_id, execution_id, digest) == seal


@dataclass(frozen=True)
class Tally:
    """The revealed digests grouped: largest group first (ties by digest), each group's
    executions sorted; ``accepted`` is the winning digest, if a group reached K."""

    groups: tuple[tuple[str, tuple[str, ...]], ...]
    accepted: str | None

    @property
    def state(self) -> str:
        return VERIFIED if self.accepted is not None else NO_CONSENSUS

    def agreeing(self) -> tuple[str, ...]:
        """The executions whose result was accepted."""
        return next((members for digest, members in self.groups if digest == self.accepted),
                    ())


def tally(digests: Mapping[str, str], confidence: int) -> Tally:
    """Group ``{execution_id: digest}``; the group of at least ``confidence`` wins."""
    by_digest: dict[str, list[str]] = {}
    for execution_id, digest in digests.items():
        by_digest.setdefault(digest, []).append(execution_id)
    groups = tuple(sorted(((digest, tuple(sorted(members)))
                           for digest, members in by_digest.items()),
                          key=lambda group: (-len(group[1]), group[0])))
    winner = groups[0][0] if groups and len(groups[0][1]) >= confidence else None
    return Tally(groups, winner)
