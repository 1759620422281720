"""What the spool's filesystem can promise: its type, whether claims on it are exclusive
across hosts, and a live check of the primitives vidspool coordinates with."""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from daemon.spool.fsops import create_exclusive, mkdir_exclusive, move
from contract.errors import MOUNT_ERRNOS, WRITE_ERRNOS


def spool_fault(exc: BaseException) -> str | None:
    """A short reason if `exc` means the spool is unusable (dead mount, full, read-only)."""
    if isinstance(exc, OSError) and exc.errno in MOUNT_ERRNOS | WRITE_ERRNOS:
        return f"{errno.errorcode.get(exc.errno, exc.errno)}: {exc.strerror}"
    return None


@dataclass(frozen=True)
class FsClass:
    fstype: str
    shared_ok: bool  # exclusive rename/create-new across hosts
    network: bool
    note: str


LOCAL = ("ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "zfs", "overlay", "f2fs", "bcachefs")
SHARED = {
    "nfs": "NFS: exclusive rename and O_EXCL (NFSv3+); mount with lookupcache=positive for prompt visibility",
    "nfs4": "NFSv4: exclusive rename and O_EXCL; mount with lookupcache=positive for prompt visibility",
    "cifs": "SMB (kernel cifs): rename is exclusive on the server; mount with actimeo=1",
    "smb3": "SMB3 (kernel): rename is exclusive on the server; mount with actimeo=1",
    "ceph": "CephFS: POSIX rename and O_EXCL",
    "fuse.sshfs": "sshfs: exclusive (the loser sees EPERM); mount with -o dir_cache=no or others' jobs show up after ~20 s",
    "9p": "9p/virtiofs share",
    "virtiofs": "virtiofs share",
}
REFUSED = {
    "fuse.rclone": "rclone mounts let two hosts both win a rename race and do not make O_EXCL "
                   "exclusive; use a kernel NFS or SMB mount (or sshfs -o dir_cache=no) for a shared spool",
}


def filesystem_type(path: Path) -> str:
    """The type of the mount holding `path`, from /proc/mounts (longest matching prefix)."""
    path = os.path.realpath(path)
    best, fstype = "", "unknown"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                mnt = parts[1].replace("\\040", " ")
                if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                    best, fstype = mnt, parts[2]
    except OSError:
        pass
    return fstype


def classify(path: Path) -> FsClass:
    fstype = filesystem_type(path)
    if fstype in LOCAL:
        return FsClass(fstype, True, False, "local filesystem")
    if fstype in SHARED:
        return FsClass(fstype, True, True, SHARED[fstype])
    if fstype in REFUSED:
        return FsClass(fstype, False, True, REFUSED[fstype])
    if fstype.startswith("fuse"):
        return FsClass(fstype, False, True, f"{fstype}: a FUSE filesystem whose claims are not known to be exclusive across hosts")
    return FsClass(fstype, True, False, f"{fstype}: not a known network filesystem; treated as local")


def check_primitives(root: Path) -> list[tuple[bool, str]]:
    """Exercises create-new, mkdir and rename in `root` from this host."""
    results = []
    probe = root / f".doctor-{secrets.token_hex(4)}"
    try:
        os.mkdir(probe)
    except OSError as exc:
        return [(False, f"cannot create a folder in {root}: {exc}")]
    try:
        f = probe / "claim"
        first, second = create_exclusive(f, b"a"), create_exclusive(f, b"b")
        results.append((first and not second and f.read_bytes() == b"a",
                        "create-new is exclusive (second O_EXCL create refused)"))
        d = probe / "dir"
        results.append((mkdir_exclusive(d) and not mkdir_exclusive(d), "mkdir is exclusive"))
        src, dst = probe / "src", probe / "dst"
        os.mkdir(src)
        (src / "x").write_bytes(b"x")
        moved = move(src, dst)
        again = move(src, probe / "dst2")
        results.append((moved and not again and (dst / "x").exists() and not src.exists(),
                        "rename of a folder moves it once; a second rename of the same source finds it gone"))
        os.mkdir(src)
        try:
            os.rename(src, dst)  # dst is a non-empty folder: must fail
            refused = False
        except OSError as exc:
            refused = exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.EPERM)
        results.append((refused, "rename onto a non-empty folder is refused"))
    finally:
        shutil.rmtree(probe, ignore_errors=True)
    return results


def visibility_lag(root: Path, second: Path, timeout: float = 60.0) -> float | None:
    """Seconds until a file created under `root` is seen under `second` (another mount of
    the same folder); None if it never shows within `timeout`."""
    name = f".vis-{secrets.token_hex(4)}"
    create_exclusive(root / name, b"v")
    start = time.monotonic()
    try:
        while time.monotonic() - start < timeout:
            if name in os.listdir(second):
                return time.monotonic() - start
            time.sleep(0.005)
        return None
    finally:
        try:
            os.unlink(root / name)
        except OSError:
            pass
