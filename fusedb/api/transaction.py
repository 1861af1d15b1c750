"""Transactions: ``db.transact(fn, keys)``, an interactive batch.

``fn(tx)`` runs under the locks of every shard ``keys`` live in (ascending
shard number, the global lock order), and may read and write through ``tx``
(:class:`Transaction`): each call returns its result at once and later calls
see earlier ones (an overlay). When fn returns, the writes are applied as a
batch's are (fusedb.api.batch): room is ensured in every shard first, then
one WAL record per shard, then the entries. If fn raises, nothing is written.

fn may run more than once (a key outside the locked shards, a segment to
open, no room in a buffer: the attempt is dropped and fn runs again, with all
shards locked in the first case), so it must have no effect outside ``tx``,
the rule ``update()``'s fn has. It must not call the database (it holds shard
locks): that raises InvalidArgumentError.
"""
