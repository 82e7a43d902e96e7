"""Protocol adapters: how the one client speaks a backend's session protocol (``--protocol NAME``).

``agentws`` (the reference backend's agentws/1), ``mqtt`` (MQTT 5 over WebSocket),
``mqtt311`` (MQTT 3.1.1) and ``socketio`` (Socket.IO 5 with connection state
recovery) are built in. ``--protocol
module:Class`` loads a team's own :class:`~users.protocols.base.Adapter` from a
module importable from the locustfile's directory (``docs/ADAPTERS.md``).
:func:`load` refuses, before any load, a name it does not know, a module that does
not import, a class that is not an adapter or lacks an operation; :func:`check`
refuses user classes that need a capability the adapter does not declare.
"""

from __future__ import annotations

import importlib
import sys
from functools import cache
from pathlib import Path

from .base import Adapter, Capability, HeartbeatDriver

#: Adapters built in, by ``--protocol`` name.
BUILT_IN = {
    "agentws": "users.protocols.agentws:AgentWS",
    "mqtt": "users.protocols.mqtt:Mqtt",
    "mqtt311": "users.protocols.mqtt:Mqtt311",
    "socketio": "users.protocols.socketio:SocketIO",
}
DEFAULT = "agentws"


class ProtocolError(Exception):
    """A ``--protocol`` that cannot be used; the message names what is wrong."""


@cache
def load(spec: str, search: str | None = None) -> type[Adapter]:
    """The adapter class ``spec`` names: a built-in name or ``module:Class`` (importable from ``search``)."""
    spec = (spec or DEFAULT).strip()
    target = BUILT_IN.get(spec, spec)
    module_name, colon, class_name = target.partition(":")
    if not colon or not module_name or not class_name:
        known = ", ".join(sorted(BUILT_IN))
        raise ProtocolError(f"{spec!r}: not a built-in protocol ({known}) nor module:Class")
    if search and search not in sys.path:
        sys.path.insert(0, search)
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # any import failure is the user's module's: name it
        raise ProtocolError(f"{spec!r}: module {module_name!r} did not load: {type(e).__name__}: {e}") from e
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        what = "does not exist" if cls is None else "is not a users.protocols.base.Adapter subclass"
        raise ProtocolError(f"{spec!r}: {module_name}.{class_name} {what}")
    required = cls.REQUIRED + operations_for(cls.capabilities)
    if cls.heartbeat_driver is HeartbeatDriver.CLIENT:
        required += ("heartbeat",)
    missing = [op for op in required if _inherited(cls, op)]
    if "push_request" in missing and not _inherited(cls, "publisher"):
        missing.remove("push_request")  # the harness publishes the pushes itself
    if missing:
        raise ProtocolError(f"{spec!r}: {cls.__name__} does not implement {', '.join(missing)}")
    if not cls.name:
        raise ProtocolError(f"{spec!r}: {cls.__name__} has no name")
    if not isinstance(cls.heartbeat_driver, HeartbeatDriver):
        raise ProtocolError(f"{spec!r}: {cls.__name__}.heartbeat_driver is not a HeartbeatDriver")
    return cls


#: The operations an adapter must implement for each capability it declares.
OPERATIONS = {
    Capability.REFRESH: ("refresh",),
    Capability.STREAM: ("send_turn",),
    Capability.HISTORY: ("ask_history",),
    Capability.PUSH: ("push_request",),
}


def operations_for(capabilities) -> tuple[str, ...]:
    return tuple(op for c in sorted(capabilities) for op in OPERATIONS.get(c, ()))


def implements(cls: type, operation: str) -> bool:
    """True when the adapter class ``cls`` has its own ``operation`` (not :class:`Adapter`'s, which raises)."""
    return not _inherited(cls, operation)


def _inherited(cls: type, operation: str) -> bool:
    """True when ``cls`` leaves ``operation`` to :class:`Adapter`, which raises NotImplementedError."""
    return getattr(cls, operation, None) is getattr(Adapter, operation, None)


def check(adapter: type[Adapter], user_classes) -> None:
    """Refuse user classes whose ``needs`` the adapter's capabilities do not cover, naming the capability."""
    problems = []
    for user_class in user_classes:
        lacking = sorted(set(getattr(user_class, "needs", ())) - adapter.capabilities)
        if lacking:
            problems.append(f"{user_class.__name__} needs {', '.join(lacking)}")
    if problems:
        has = ", ".join(sorted(adapter.capabilities)) or "none"
        raise ProtocolError(f"protocol {adapter.name!r} (capabilities: {has}) cannot serve: {'; '.join(problems)}")


def describe(adapter: type[Adapter], spec: str | None) -> dict:
    """What meta.json says of the run's protocol: its name, how it was asked for, what it can do."""
    return {"name": adapter.name, "spec": spec or DEFAULT, "capabilities": sorted(adapter.capabilities)}


def search_path(locustfile: str | None) -> str | None:
    """The directory a ``module:Class`` adapter is imported from: the (first) locustfile's."""
    if not locustfile:
        return None
    first = str(locustfile).split(",")[0].strip()
    return str(Path(first).resolve().parent) if first else None
