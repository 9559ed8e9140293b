"""Reference profiles, drift of the requests against them, and outlier scores (see :mod:`.watch`)."""

from mlport.observability.drift.profile import Profile, build_profile, find_profile, read_profile
from mlport.observability.drift.watch import DriftWatch

__all__ = ["DriftWatch", "Profile", "build_profile", "find_profile", "read_profile"]
