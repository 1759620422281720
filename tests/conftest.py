import os

import pytest

from tests.support import Daemon

os.environ["HF_HUB_OFFLINE"] = "1"

# Real network shares (sshd + sshfs, Samba + rclone) as fixtures: ssh_export, smb_export, …
pytest_plugins = ["tests.netfs"]


@pytest.fixture
def spool_root(tmp_path):
    return tmp_path / "spool"


@pytest.fixture
def daemon(spool_root):
    """One real daemon with two CPU workers on a fresh spool."""
    d = Daemon(spool_root, workers=["cpu", "cpu"]).start()
    yield d
    d.stop()


@pytest.fixture
def markers(tmp_path):
    path = tmp_path / "markers"
    path.mkdir()
    return path
