"""The domain's exceptions. The HTTP edge (lib.http) maps each to a status and a JSON error
body in exactly one place; domain code raises, it never builds responses for errors. Every
exception takes its whole state (message, headers, details) in its constructor.

Every AppError subclass in the tree, by status (defined here unless a module is named):
- 400 BadRequest: InvalidJson, InvalidSignature, InvalidEvent, and
  InvalidUnsubscribeToken (lib.jobs.unsubscribe)
- 401 Unauthorized
- 402 PaymentRequired: QuotaExceeded, and TrialExpired, SubscriptionInactive (quota)
- 403 Forbidden: IpBlocked
- 404 NotFound
- 405 MethodNotAllowed
- 411 LengthRequired
- 413 PayloadTooLarge
- 429 RateLimited
- 4xx/5xx MalformedRequest (status given: whatever http.server itself rejected)
- 500 WebhookNotApplied, ConfigError
- 502 ProviderUnavailable, and ProviderRejected (llm)
- 503 ServiceUnavailable: AuthUnavailable, MaintenanceMode, DatabaseUnavailable,
  DatabaseBusy, and NoProviderConfigured (llm)
"""


class AppError(Exception):
    """Base of every error that has a meaning for the client."""

    status = 500
    code = "internal_error"
    default_message = "Internal server error"

    def __init__(self, message: str | None = None, *, headers: dict[str, str] | None = None,
                 details: dict | None = None):
        super().__init__(message or self.default_message)
        self.message = message or self.default_message
        self.headers = headers or {}
        self.details = details


class BadRequest(AppError):
    status, code, default_message = 400, "invalid_request", "Invalid request"


class InvalidJson(BadRequest):
    code, default_message = "invalid_json", "Request body is not valid JSON"


class InvalidSignature(BadRequest):
    code, default_message = "invalid_signature", "Invalid Stripe-Signature"


class InvalidEvent(BadRequest):
    code, default_message = "invalid_event", "Not a Stripe event"


class Unauthorized(AppError):
    status, code, default_message = 401, "unauthorized", "Missing or invalid credentials"


class PaymentRequired(AppError):
    status, code, default_message = 402, "payment_required", "An active plan is required"


class QuotaExceeded(PaymentRequired):
    code, default_message = "quota_exceeded", "Monthly generation quota exhausted"


class Forbidden(AppError):
    status, code, default_message = 403, "forbidden", "Not allowed"


class IpBlocked(Forbidden):
    code, default_message = "ip_blocked", "This IP address is blocked"


class NotFound(AppError):
    status, code, default_message = 404, "not_found", "Not found"


class MethodNotAllowed(AppError):
    status, code, default_message = 405, "method_not_allowed", "Method not allowed"


class LengthRequired(AppError):
    status, code, default_message = 411, "length_required", "Content-Length is required"


class PayloadTooLarge(AppError):
    status, code, default_message = 413, "payload_too_large", "Request body too large"


class RateLimited(AppError):
    status, code, default_message = 429, "rate_limited", "Too many requests"


class MalformedRequest(AppError):
    """A request http.server rejected before any route saw it; `status` is the one it chose."""

    code, default_message = "malformed_request", "Malformed request"

    def __init__(self, status: int, message: str | None = None):
        super().__init__(message)
        self.status = status


class ProviderUnavailable(AppError):
    status, code, default_message = 502, "provider_unavailable", "Every LLM provider failed"

    def __init__(self, message: str | None = None, *, outcome=None, **kwargs):
        super().__init__(message, **kwargs)
        self.outcome = outcome  # every attempt made (lib.generation.llm.Outcome)


class ServiceUnavailable(AppError):
    status, code, default_message = 503, "service_unavailable", "Service temporarily unavailable"


class AuthUnavailable(ServiceUnavailable):
    code, default_message = "auth_unavailable", "Could not fetch the keys to verify the session"


class MaintenanceMode(ServiceUnavailable):
    code, default_message = "maintenance", "Down for maintenance, please retry later"


class DatabaseUnavailable(ServiceUnavailable):
    code, default_message = "database_unavailable", "Database unavailable"


class DatabaseBusy(ServiceUnavailable):
    """Every connection this instance may open (DB_MAX_CONNECTIONS) stayed in use too long."""

    code, default_message = "database_busy", "Database busy, please retry"

    def __init__(self, message: str | None = None, **kwargs):
        kwargs.setdefault("headers", {"Retry-After": "1"})
        super().__init__(message, **kwargs)


class WebhookNotApplied(AppError):
    """The event could not be applied; it stays unrecorded, so the sender's retry applies it."""

    status, code = 500, "webhook_not_applied"
    default_message = "The event was not applied and not recorded; retry it"


class ConfigError(AppError):
    """A required setting is missing or malformed. The message names the variable, never its value."""

    status, code, default_message = 500, "config_error", "Server misconfigured"
