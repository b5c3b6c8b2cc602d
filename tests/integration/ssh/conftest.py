"""Fixtures of the ssh-backend tests: the 3-node test cluster, always torn down, and a backend on it."""

from __future__ import annotations

import os

import pytest

from orchestrator.cluster import sshconn
from orchestrator.cluster.ssh import SSHBackend
from orchestrator.model.settings import Settings
from tests.conftest import require
from tests.integration.sshcluster import NodeCluster, sshd_available


def _cluster(base, **options):
    require(sshd_available(), "sshd and ssh-keygen (apt-get install openssh-server openssh-client)")
    cluster = NodeCluster(base, **options)
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture(scope="session")
def ssh_cluster(tmp_path_factory):
    """Three nodes (namespaces on a bridge, else loopback sshds), shared by the tests that leave them intact."""
    cluster = _cluster(tmp_path_factory.mktemp("sshcluster"))
    try:
        yield cluster
    finally:
        sshconn.close_all()
        cluster.stop()


@pytest.fixture
def own_cluster(tmp_path):
    """A cluster of the test's own, for tests that break nodes."""
    cluster = _cluster(tmp_path / "cluster")
    try:
        yield cluster
    finally:
        sshconn.close_all()
        cluster.stop()


@pytest.fixture
def private_cluster(tmp_path):
    """A cluster of the test's own whose nodes each see an empty directory of their own at home/ (the
    engine's state directory): storage that is not shared. Yields the cluster and that directory."""
    require(os.geteuid() == 0, "root (each node's private directory is a bind mount in its mount namespace)")
    home = tmp_path / "home"
    home.mkdir()
    cluster = _cluster(tmp_path / "cluster", private=[home])
    try:
        yield cluster, home
    finally:
        sshconn.close_all()
        cluster.stop()


def backend_for(cluster: NodeCluster, home, **inventory) -> SSHBackend:
    path = cluster.inventory(home / "inventory.yaml", **inventory) if inventory else cluster.inventory()
    return SSHBackend(Settings(home=home, inventory=path))


@pytest.fixture
def ssh_backend(ssh_cluster, tmp_path):
    return backend_for(ssh_cluster, tmp_path)
