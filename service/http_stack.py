"""The HTTP stack of ``mmsearch serve`` (``MMSEARCH_HTTP``).

``httptools`` (a C parser, llhttp) on ``uvloop`` is the default when both are importable;
``h11`` (pure Python) on asyncio is the fallback, and ``MMSEARCH_HTTP=h11`` forces it.
Both answer malformed HTTP with the API's JSON 400 (``service.protocol``).
"""

from __future__ import annotations

import importlib.util
from typing import Any, Literal

from service.protocol import JsonErrorH11Protocol

HttpChoice = Literal["auto", "h11", "httptools"]


def fast_stack_available() -> bool:
    """httptools and uvloop both importable (uvicorn's ``standard`` pair)."""
    return all(importlib.util.find_spec(name) for name in ("httptools", "uvloop"))


def resolve_http(choice: HttpChoice) -> Literal["h11", "httptools"]:
    """The parser to run: ``auto`` takes httptools when the fast stack is installed."""
    if choice == "auto":
        return "httptools" if fast_stack_available() else "h11"
    return choice


def protocol_options(choice: HttpChoice) -> dict[str, Any]:
    """``http`` and ``loop`` keyword arguments for ``uvicorn.run``.

    h11 goes with asyncio, httptools with uvloop: uvicorn's own ``auto`` loop would pick
    uvloop whenever it is installed, so forcing h11 forces the whole slow stack, the one
    to compare against."""
    if resolve_http(choice) == "h11":
        return {"http": JsonErrorH11Protocol, "loop": "asyncio"}
    from service.protocol_httptools import JsonErrorHttpToolsProtocol

    return {"http": JsonErrorHttpToolsProtocol, "loop": "uvloop"}
