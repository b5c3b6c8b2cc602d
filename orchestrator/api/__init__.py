"""The REST API: the engine over HTTP for many users, with the admin task monitor and /metrics."""
