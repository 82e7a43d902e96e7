"""The entry ``locust`` finds: the simulated agentws/1 users and the run plugins, nothing else."""

import harness  # noqa: F401  (registers the run directory, recorder, telemetry and embedded backend)
from users.conversation import ConversationUser
from users.flapping import FlappingUser
from users.heartbeat import HeartbeatUser
from users.refresh import TokenRefreshUser
from users.zombie import ZombieUser

__all__ = ["ConversationUser", "FlappingUser", "HeartbeatUser", "TokenRefreshUser", "ZombieUser"]
