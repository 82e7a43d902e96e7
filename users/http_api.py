"""The backend's HTTP side as a client needs it: tokens and (for tests of delivery) pushes.

Plain ``urllib`` on purpose: under Locust the socket module is gevent's, so
these calls only block the calling user. Errors come back as templated text,
never raised, so a user decides what a failed call means for it.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request


class ApiResult:
    __slots__ = ("ok", "body", "error")

    def __init__(self, ok: bool, body: dict | None = None, error: str = "") -> None:
        self.ok, self.body, self.error = ok, body or {}, error


def post_json(url: str, body: dict, *, bearer: str = "", timeout: float = 5.0, context=None) -> ApiResult:
    """POST JSON; ``context`` is the SSLContext for https (None: urllib builds a new one per call)."""
    headers = {"Content-Type": "application/json"}
    if bearer:
        headers["Authorization"] = f"Bearer {bearer}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return ApiResult(True, json.loads(response.read() or b"{}"))
    except urllib.error.HTTPError as err:
        return ApiResult(False, error=f"HTTP {err.code}")
    except (urllib.error.URLError, OSError):
        return ApiResult(False, error="unreachable")
    except ValueError:
        return ApiResult(False, error="answer is not JSON")


def fetch_token(token_url: str, user: str, ttl_s: float, timeout: float = 5.0, context=None) -> ApiResult:
    """``POST token_url {"user", "ttl_s"}`` -> ``{"token", "exp"}``."""
    result = post_json(token_url, {"user": user, "ttl_s": ttl_s}, timeout=timeout, context=context)
    if result.ok and not isinstance(result.body.get("token"), str):
        return ApiResult(False, error="answer has no token")
    return result


def push(base_url: str, admin_token: str, path: str, body: dict, context=None) -> ApiResult:
    """Have the backend queue a push for a session, attached or not: the POST its protocol adapter described."""
    return post_json(base_url.rstrip("/") + path, body, bearer=admin_token, context=context)
