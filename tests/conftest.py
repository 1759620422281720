import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO, Daemon

TINY_DIR = REPO / ".cache" / "tiny-models"

os.environ["HF_HUB_OFFLINE"] = "1"
# One compute thread per process (this one, the daemons and workers it starts): the test files
# run side by side (pytest-xdist) on few cores, and torch's OpenMP threads spinning against
# each other made in-process training 14× slower than one thread each (measured: 3.5 s vs
# 0.26 s per step of test_previews' VAE training on a loaded 2-core machine).
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

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


# The longest files first: pytest-xdist hands test files (--dist loadfile) to its processes
# in collection order, so a long file collected last would run alone at the end. Measured
# per-file times (junit, `make test`): these take 2-8 minutes each, the rest well under 2.
LONGEST_FIRST = ("test_acceleration", "test_crash_points", "test_previews", "test_video_generation",
                 "test_talking_head", "test_model_download", "test_estimates", "test_shared_spool",
                 "test_network_mounts", "test_compat_visualizr", "test_cli", "test_wav2lip", "test_musetalk")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: the rest keep their order
