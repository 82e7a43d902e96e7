"""Signed tokens: JWT HS256 with ``sub``, ``exp``, ``iat`` and ``jti``."""

from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass

import jwt

ALGORITHM = "HS256"


class TokenInvalid(Exception):
    """Bad signature, malformed, or missing a claim."""


class TokenExpired(Exception):
    """Well-formed and signed, but past ``exp``."""


@dataclass(frozen=True, slots=True)
class Claims:
    sub: str
    exp: float


class TokenIssuer:
    def __init__(self, secret: str) -> None:
        self._secret = secret

    def issue(self, sub: str, ttl_s: float) -> tuple[str, float]:
        now = time.time()
        exp = math.ceil(now + ttl_s)  # PyJWT truncates a float exp: it would expire up to 1 s early
        claims = {"sub": sub, "iat": int(now), "exp": exp, "jti": secrets.token_hex(8)}
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM), exp

    def verify(self, token: str) -> Claims:
        try:
            claims = jwt.decode(
                token, self._secret, algorithms=[ALGORITHM], options={"require": ["sub", "exp"]}, leeway=0
            )
        except jwt.ExpiredSignatureError:
            raise TokenExpired from None
        except jwt.PyJWTError as exc:
            raise TokenInvalid(str(exc)) from None
        sub = claims["sub"]
        if not isinstance(sub, str) or not sub:
            raise TokenInvalid("sub must be a non-empty string")
        return Claims(sub=sub, exp=float(claims["exp"]))
