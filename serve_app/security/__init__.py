"""Who may call us: API-key auth, per-key rate limits, and the ingress security middleware."""

from serve_app.security.middleware import SecurityMiddleware, SecuritySettings, configure, current

__all__ = ["SecurityMiddleware", "SecuritySettings", "configure", "current"]
