"""Every error notifyd raises on purpose, and the stable code the API maps it to.

    NotifydError                     base; `code` (stable slug), `status` (HTTP), `field`
    ├── BadRequest          400      malformed input (not JSON, wrong shape)
    ├── PayloadTooLarge     413      request or field over its size limit
    ├── ValidationFailed    422      a field is present but invalid; `field` names it
    ├── Unauthorized        401      no credentials, or credentials that do not check out
    ├── Forbidden           403      authenticated, but not allowed to do this
    ├── NotFound            404      unknown (or invisible to the caller) object
    ├── Conflict            409      e.g. a user name that exists already
    ├── RateLimited         429      slow down; `retry_after` seconds
    ├── QuotaExceeded       507      a user's stored attachments would pass their quota
    └── Unavailable         503      overloaded or storage full; `retry_after` seconds
        └── StoreUnavailable         the database cannot take writes right now
            └── StoreGone            ...nor ever will in this process (the daemon stopped)

Messages are written for the person who reads them: say what was wrong and how to
fix it, never echo secrets.
"""

from __future__ import annotations


class NotifydError(Exception):
    status = 500
    code = "internal"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.retry_after = retry_after
        if code is not None:
            self.code = code


class BadRequest(NotifydError):
    status = 400
    code = "bad_request"


class PayloadTooLarge(NotifydError):
    status = 413
    code = "too_large"


class ValidationFailed(NotifydError):
    status = 422
    code = "invalid"


class Unauthorized(NotifydError):
    status = 401
    code = "unauthorized"


class Forbidden(NotifydError):
    status = 403
    code = "forbidden"


class NotFound(NotifydError):
    status = 404
    code = "not_found"


class Conflict(NotifydError):
    status = 409
    code = "conflict"


class RateLimited(NotifydError):
    status = 429
    code = "rate_limited"


class QuotaExceeded(NotifydError):
    status = 507
    code = "quota_exceeded"


class Unavailable(NotifydError):
    status = 503
    code = "unavailable"


class StoreUnavailable(Unavailable):
    code = "store_unavailable"


class StoreGone(StoreUnavailable):
    """The store went away for good (the delivery worker's daemon stopped or died):
    retrying in this process is pointless."""
