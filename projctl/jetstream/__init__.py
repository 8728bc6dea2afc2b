"""The NATS JetStream backend: one replicated stream is the journal and the current state.

Selected by a database location ``nats://HOST:PORT[,HOST:PORT...]/NAME`` (``tls://`` for
TLS); ``projctl.config`` parses it. nats-py is an optional extra (``projctl[nats]``) and is
imported in this package only: ``_connection`` (a connection and a deadline per call, the
stream's creation), ``_reads``, ``_writes``, ``_import`` (a database file's projects and
journal moved into a stream: ``projctl migrate``), ``_backend`` (the
:class:`~projctl.backend.Backend` protocol and following) and ``gateway`` (the stream as a
broadcast server's storage, keeping its last read so that the next reads only what is new).

**The stream.** Database ``NAME`` is the stream ``PROJCTL_NAME`` (created on the first write:
file storage, replicas ``min(3, cluster size)`` or ``?replicas=N``, atomic batches allowed)
holding the subjects ``projctl.NAME.>``. Every message in it is one event, so the stream
sequence *is* the event's ``seq``: assigned by the stream's leader, strictly increasing and
the same for every reader. The payload is the event without ``seq`` (and, for a deletion or
an emitted event, the project as it was, so that a replay can answer with it):

``projctl.NAME.project.<second>.<n>``
    the lifecycle events of project ``proj_<second>[_<n>]`` (``n`` is 1 for no suffix). The
    *last message on this subject is the project's current state*: a ``project_created`` or
    ``project_updated`` carries the whole record, a ``project_deleted`` is its tombstone.
``projctl.NAME.emit.<second>.<n>``
    the events emitted about that project.

**Reads.** ``get`` is a "last message by subject" read on the leader; ``list`` reads the last
message of every project subject (a ``last_per_subject`` consumer, checked against the
leader's newest project message so a lagging replica is never taken for the truth), in
creation order (the ``Projctl-Created`` header carries the creation seq). ``journal`` and the
follower replay the stream from a sequence.

**Writes** are compare-and-set: ``Nats-Expected-Last-Subject-Sequence`` on the project's
subject. A create expects 0 on its id's subject, so an id is never issued twice (the next
free suffix of the second is read first; a loser of a race takes the next); an update or a
delete expects the sequence it read, so a concurrent change makes it read again (an
``If-Match`` is then checked against what it finds); an emitted event expects the project's
sequence through ``Nats-Expected-Last-Subject-Sequence-Subject``. Deleting several is one
*atomic batch* (``Nats-Batch-Id``/``-Sequence``/``-Commit``, server 2.12+; nats-py has no call
for it, so the headers are sent here): all the tombstones, each with its own expectation, are
stored together or not at all.

**Exactly once.** Every message carries ``Nats-Msg-Id: <key>:<i>``: the caller's idempotency
key, or a fresh one per write. A reply lost to a timeout or a leader failover is retried
with the same ids, and the stream applies it once: within the stream's duplicate window
(:data:`DUPLICATE_WINDOW`, one hour) its ack says ``duplicate`` with the first seq, and the
first result is read back from that message. The write's fingerprint travels in the
``Projctl-Fingerprint`` header: the same key with another write raises
:class:`~projctl.errors.IdempotencyKeyReusedError`. A deletion is recognised for as long as
its tombstone is kept (forever), past the window too; a create, update or emit only within it.

**Trimming.** The journal window (``PROJCTL_JOURNAL_LIMIT`` when the stream is created, kept
in its metadata) is the last ``limit`` seqs: ``journal`` shows them and a follower resuming
from before them gets a ``resync`` with every project. Every ``limit`` events a writer purges
what fell out of the window *and is no longer needed*: emitted events, and the messages of a
project's subject older than its last. The last message of every subject stays, so current
state survives any window, and tombstones keep deleted ids from being issued again.

Calls are synchronous: each runs on a private event loop with its own connection, bounded by
the location's ``timeout`` (default 10 s); an unreachable cluster is a
:class:`~projctl.errors.ServerUnavailableError`. :meth:`JetStreamBackend.follow` is the one
asynchronous method: it runs on the caller's loop.
"""

from __future__ import annotations

from projctl.jetstream._backend import JetStreamBackend
from projctl.jetstream._connection import DUPLICATE_WINDOW
from projctl.jetstream.gateway import StreamGateway

__all__ = [
    "DUPLICATE_WINDOW",
    "INSTALL_HINT",
    "JetStreamBackend",
    "StreamGateway",
    "nats_available",
]

#: What to install for a ``nats://`` database.
INSTALL_HINT = "pip install 'projctl[nats]'"


def nats_available() -> bool:
    """Whether nats-py is installed (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("nats") is not None
