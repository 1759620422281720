import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO, Daemon

TINY_DIR = REPO / ".cache" / "tiny-models"

os.environ["HF_HUB_OFFLINE"] = "1"

# Real network shares (sshd + sshfs, Samba + rclone) as fixtures: ssh_export, smb_export, …;
# real S3 servers (SeaweedFS, moto) and a fault proxy: s3_server, s3_bucket, fault_proxy, …
pytest_plugins = ["tests.netfs", "tests.s3servers"]


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


@pytest.fixture(scope="session")
def tiny_models() -> Path:
    """Every tiny model family of scripts/tiny_models.py under .cache/tiny-models/ (built by
    save_pretrained of the real classes; rebuilt only when the script changes)."""
    sys.path.insert(0, str(REPO / "scripts"))
    from tiny_models import FAMILIES

    subprocess.run([sys.executable, str(REPO / "scripts" / "tiny_models.py"), str(TINY_DIR)],
                   check=True, capture_output=True, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    for family in FAMILIES:
        assert (TINY_DIR / family / "model_index.json").is_file(), family
    return TINY_DIR
