"""Replays of the event log: the audit trail and per-minute billing.

Pure folds (``audit``, ``billing``, ``prices``) over events read by ``reader``; a replay
never appends to the log and never writes to etcd.
"""
