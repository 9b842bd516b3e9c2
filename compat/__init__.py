"""Environment compatibility: the dependency doctor, opt-in legacy shims, and the lock tooling.

Importing ``compat`` changes nothing. Shims are applied only by an explicit ``compat.apply(...)``.
"""

from compat.shims import ShimError, active, apply, apply_all, available, revert, shimmed

__all__ = ["ShimError", "active", "apply", "apply_all", "available", "revert", "shimmed"]
