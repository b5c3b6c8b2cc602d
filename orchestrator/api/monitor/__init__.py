"""The admin task monitor: server-rendered pages under /ui over the REST API (no front-end build)."""
