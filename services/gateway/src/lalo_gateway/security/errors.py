"""Security failures as domain errors: each carries its gRPC code, and the HTTP edge maps
them to OpenAI-shaped 401/403/429/413/400 responses."""

from __future__ import annotations

from lalo_common.errors import InvalidArgument, PermissionDenied, ResourceExhausted, Unauthenticated


class AuthenticationFailed(Unauthenticated):
    """No credential, or one that does not verify. The message never echoes the credential."""

    http_status = 401
    openai_type = "invalid_request_error"  # what OpenAI's API answers for a bad key
    openai_code = "invalid_api_key"


class Forbidden(PermissionDenied):
    http_status = 403
    openai_type = "permission_error"
    openai_code = "permission_denied"


class ModelNotAllowed(Forbidden):
    openai_code = "model_not_allowed"


class RateLimited(ResourceExhausted):
    http_status = 429
    openai_type = "rate_limit_exceeded"
    openai_code = "rate_limit_exceeded"

    def __init__(self, message: str, retry_after_s: int, kind: str = "requests") -> None:
        super().__init__(message)
        self.retry_after_s = max(1, retry_after_s)
        self.openai_type = kind  # OpenAI says which limit: "requests" or "tokens"


class RequestTooLarge(InvalidArgument):
    http_status = 413
    openai_type = "invalid_request_error"
    openai_code = "request_too_large"


class RequestLimitExceeded(InvalidArgument):
    http_status = 400
    openai_type = "invalid_request_error"
    openai_code = "limit_exceeded"

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message, param=param)
