"""The back-off of retried deploy work (a replica's restarts, an artifact's fetches): see :mod:`mlport.core.backoff`."""

from mlport.core.backoff import Backoff

__all__ = ["Backoff"]
