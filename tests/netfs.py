"""Real network shares on loopback for tests: sshd + sshfs, Samba + smbclient, rclone's smb mount.

Every server and mount is a child process started here, on a free 127.0.0.1 port, with all of
its configuration, keys and state in a temporary folder, and stopped by PID on exit (also when
a test fails, and at interpreter exit as a last resort). Nothing is installed or changed
system-wide except /run/sshd, sshd's privilege separation folder, which is created if missing.
The tools come from `scripts/test-setup.sh` (run by `make test`); a missing tool is an error,
never a skip.

    from tests.netfs import ssh_export, smb_export   # pytest fixtures

    def test_two_hosts(ssh_export):
        a, b = ssh_export.mount("a"), ssh_export.mount("b")   # two sshfs mounts, dir_cache=no
        (a.path / "x").write_text("1")
        assert (b.path / "x").read_text() == "1"

Measured behaviours are documented (and asserted) in tests/test_netfs.py.
"""

from __future__ import annotations

import atexit
import errno
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterable, Sequence

import pytest

HOST = "127.0.0.1"
SETUP_HINT = "run `make test` (scripts/test-setup.sh installs openssh-server sshfs samba smbclient rclone)"
# What an operation on a mount whose FUSE process died fails with (measured: ENOTCONN).
DEAD_MOUNT_ERRNOS = frozenset({errno.ENOTCONN, errno.EIO, errno.ESTALE, errno.ENODEV, errno.EHOSTDOWN})


# ----------------------------------------------------------------------------- helpers

class NetfsError(AssertionError):
    """A share could not be started or stopped (with the process log)."""


def require_tool(name: str) -> str:
    """Absolute path of a tool; raises NetfsError (a test failure, not a skip) when missing."""
    for candidate in (name, f"/usr/sbin/{name}", f"/sbin/{name}", f"/usr/bin/{name}"):
        found = shutil.which(candidate) if "/" not in candidate else (candidate if os.access(candidate, os.X_OK) else None)
        if found:
            return found
    raise NetfsError(f"{name} is not installed: {SETUP_HINT}")


def require_fuse() -> None:
    if not os.path.exists("/dev/fuse"):
        raise NetfsError("/dev/fuse is missing: FUSE mounts (sshfs, rclone) cannot work here")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.02, proc: "_Child | None" = None):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and not proc.alive():
            raise NetfsError(f"{what}: {proc.name} exited with {proc.returncode}\n{proc.log()}")
        if time.monotonic() > deadline:
            raise NetfsError(f"{what}: not within {timeout}s" + (f"\n{proc.log()}" if proc else ""))
        time.sleep(interval)


def _proc_stat(pid: int) -> tuple[int, int, int] | None:
    """(ppid, starttime, session id) of a live process, None when it is gone (or a zombie)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[1]), int(fields[19]), int(fields[3])


def _descendants(pid: int) -> list[tuple[int, int]]:
    """(pid, starttime) of every live descendant of PID, and of every process in its session.

    The session matters: sshfs double-forks its ssh (whose parent becomes init)."""
    children: dict[int, list[tuple[int, int]]] = {}
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != pid:
            st = _proc_stat(int(entry))
            if st:
                children.setdefault(st[0], []).append((int(entry), st[1]))
                if st[2] == pid:
                    out.append((int(entry), st[1]))
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.append(child)
            todo.append(child[0])
    return out


def _kill_exact(procs: Iterable[tuple[int, int]], sig: int) -> list[tuple[int, int]]:
    """Signals each (pid, starttime) that is still that same process; returns those signalled."""
    hit = []
    for pid, start in procs:
        st = _proc_stat(pid)
        if st and st[1] == start:
            try:
                os.kill(pid, sig)
                hit.append((pid, start))
            except ProcessLookupError:
                pass
    return hit


def _wait_gone(procs: list[tuple[int, int]], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any((st := _proc_stat(p)) and st[1] == s for p, s in procs):
            return True
        time.sleep(0.02)
    return False


_LIVE: list = []  # objects to stop at interpreter exit if a test run is interrupted


@atexit.register
def _stop_all_live() -> None:
    for obj in reversed(list(_LIVE)):
        try:
            obj.stop()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


class _Child:
    """One child process with its output in a log file, stopped by PID (and its descendants)."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, env: dict | None = None, cwd: Path | None = None):
        self.name, self.argv, self.log_path, self.env, self.cwd = name, list(argv), Path(log_path), env, cwd
        self.proc: subprocess.Popen | None = None
        self._known: list[tuple[int, int]] = []

    def start(self) -> "_Child":
        self._log = open(self.log_path, "ab")
        # Own session: a Ctrl-C at the terminal does not reach it; we stop it ourselves.
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=self.env, cwd=self.cwd, start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self):
        return self.proc.poll() if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def remember_descendants(self) -> None:
        if self.alive():
            seen = set(self._known)
            self._known += [d for d in _descendants(self.pid) if d not in seen]

    def log(self, tail: int = 6000) -> str:
        try:
            return f"--- {self.log_path} ---\n" + self.log_path.read_bytes()[-tail:].decode(errors="replace")
        except OSError:
            return ""

    def wait(self, timeout: float) -> bool:
        try:
            self.proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
        """SIG to the process (SIGKILL if it outlives TIMEOUT), then SIGTERM/SIGKILL to what it left behind."""
        if self.proc is None:
            return
        self.remember_descendants()
        if self.alive():
            self.proc.send_signal(sig)
            if not self.wait(timeout):
                self.proc.kill()
                self.proc.wait(10)
        left = _kill_exact(self._known, signal.SIGTERM)
        if left and not _wait_gone(left, 3):
            _kill_exact(left, signal.SIGKILL)
            _wait_gone(left, 3)
        self._known = []
        self._log.close()

    def kill(self) -> None:
        """SIGKILL, the way a crash or the OOM killer ends it (descendants are left to notice)."""
        self.remember_descendants()
        if self.alive():
            self.proc.kill()
            self.proc.wait(10)


class _StateDir:
    """A state folder: the caller's, or a short-named temp dir removed on stop.

    Short because Samba puts unix sockets in it (108-byte path limit)."""

    def __init__(self, state_dir: Path | str | None, prefix: str):
        self.own = state_dir is None
        self.path = Path(tempfile.mkdtemp(prefix=prefix)) if self.own else Path(state_dir)
        self.path.mkdir(parents=True, exist_ok=True)

    def remove(self) -> None:
        if self.own:
            shutil.rmtree(self.path, ignore_errors=True)


def _mounts() -> dict[str, str]:
    """Mount point -> filesystem type, from /proc/self/mounts (dead FUSE mounts included)."""
    out = {}
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            mp = parts[1].replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
            out[mp] = parts[2]
    return out


def is_mounted(path: Path | str) -> bool:
    """True while anything is mounted at PATH, even a dead FUSE mount (where os.path.ismount is False)."""
    return os.path.realpath(path) in _mounts()


def force_unmount(path: Path | str, timeout: float = 10) -> None:
    """Unmounts PATH however it takes: fusermount -u, then lazy (fusermount -uz, umount -l)."""
    path = os.path.realpath(path)
    fusermount = shutil.which("fusermount3") or shutil.which("fusermount")
    attempts = []
    if fusermount:
        attempts += [[fusermount, "-u", "-q", path], [fusermount, "-u", "-z", "-q", path]]
    attempts += [["umount", path], ["umount", "-l", path]]
    for argv in attempts:
        if not is_mounted(path):
            return
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout)
    if is_mounted(path):
        raise NetfsError(f"could not unmount {path}")


# ----------------------------------------------------------------------------- sshd + sshfs

class _Server:
    """What SshServer and SambaServer share: one child process and a state folder."""

    child: "_Child | None"
    _state: "_StateDir"

    def log(self) -> str:
        return self.child.log() if self.child else ""

    def stop(self) -> None:
        if self in _LIVE:
            _LIVE.remove(self)
        if self.child:
            self.child.stop()
            self.child = None
        self._state.remove()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class SshServer(_Server):
    """`sshd -D -e` on 127.0.0.1:<free port>, public-key login as root with a generated key.

    Serves the whole filesystem (sshfs picks the remote path); config, host key, client key and
    log live in STATE_DIR (a temp dir removed on stop when not given)."""

    user = "root"
    host = HOST

    def __init__(self, state_dir: Path | str | None = None, port: int | None = None):
        self._state = _StateDir(state_dir, "vsp-sshd-")
        self.dir = self._state.path
        self.port = port or free_port()
        self.host_key = self.dir / "ssh_host_ed25519_key"
        self.client_key = self.dir / "client_ed25519_key"
        self.config = self.dir / "sshd_config"
        self.child: _Child | None = None

    @staticmethod
    def ensure_privsep_dir() -> None:
        """sshd refuses to start without /run/sshd (systemd's RuntimeDirectory makes it normally)."""
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        os.chmod("/run/sshd", 0o755)

    def start(self) -> "SshServer":
        sshd, keygen = require_tool("sshd"), require_tool("ssh-keygen")
        require_tool("ssh")
        self.ensure_privsep_dir()
        for key in (self.host_key, self.client_key):
            if not key.exists():
                subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", f"vidspool-test-{key.name}", "-f", str(key)],
                               check=True, stdout=subprocess.DEVNULL)
        authorized = self.dir / "authorized_keys"
        authorized.write_text(Path(f"{self.client_key}.pub").read_text())
        self.config.write_text(f"""\
# Generated for a test by tests/netfs.py; nothing from /etc/ssh is read.
ListenAddress {HOST}:{self.port}
AddressFamily inet
HostKey {self.host_key}
PidFile {self.dir}/sshd.pid
AuthorizedKeysFile {authorized}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
AuthenticationMethods publickey
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
PrintMotd no
X11Forwarding no
AllowTcpForwarding no
AllowAgentForwarding no
PermitUserEnvironment no
MaxStartups 200
MaxSessions 200
LogLevel INFO
Subsystem sftp internal-sftp
""")
        test = subprocess.run([sshd, "-t", "-f", str(self.config)], capture_output=True, text=True)
        if test.returncode:
            raise NetfsError(f"sshd -t rejected {self.config}: {test.stderr}")
        self.child = _Child("sshd", [sshd, "-D", "-e", "-f", str(self.config)], self.dir / "sshd.log").start()
        _LIVE.append(self)
        try:
            wait_for(self._banner, 15, f"sshd on {HOST}:{self.port}", proc=self.child)
        except BaseException:
            self.stop()
            raise
        return self

    def _banner(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=1) as s:
                return s.recv(64).startswith(b"SSH-")
        except OSError:
            return False

    def ssh_options(self) -> list[str]:
        """`-o` options (without the -o) any OpenSSH client needs to log in here."""
        return [f"IdentityFile={self.client_key}", "IdentitiesOnly=yes", "StrictHostKeyChecking=no",
                "UserKnownHostsFile=/dev/null", "BatchMode=yes", "LogLevel=ERROR"]

    def run(self, command: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """Runs COMMAND over ssh as root (checks the login works); raises on a non-zero exit."""
        argv = [require_tool("ssh"), "-F", "/dev/null", "-p", str(self.port)]
        for opt in self.ssh_options():
            argv += ["-o", opt]
        argv += [f"{self.user}@{HOST}", command]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if done.returncode:
            raise NetfsError(f"ssh {command!r}: exit {done.returncode}: {done.stderr}\n{self.log()}")
        return done

    def drop_connections(self) -> int:
        """SIGKILLs sshd's per-connection processes (a server-side crash), keeping the listener."""
        if not self.child or not self.child.alive():
            return 0
        return len(_kill_exact(_descendants(self.child.pid), signal.SIGKILL))



class _FuseMount:
    """A FUSE filesystem process run in the foreground (so its PID is ours) on MOUNTPOINT."""

    kind = "fuse"

    def __init__(self, mountpoint: Path | str, log_path: Path):
        self.path = Path(mountpoint)
        self.log_path = log_path
        self.child: _Child | None = None

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict | None:
        return None

    @property
    def mountpoint(self) -> Path:
        return self.path

    def mount(self, timeout: float = 20) -> "_FuseMount":
        require_fuse()
        self.path.mkdir(parents=True, exist_ok=True)
        if is_mounted(self.path):
            raise NetfsError(f"{self.path} is already a mount point")
        self.child = _Child(self.kind, self._argv(), self.log_path, env=self._env()).start()
        if self not in _LIVE:
            _LIVE.append(self)
        try:
            wait_for(lambda: os.path.ismount(self.path), timeout, f"{self.kind} mount on {self.path}", proc=self.child)
            self.child.remember_descendants()  # e.g. sshfs's ssh
        except BaseException:
            self.stop()
            raise
        return self

    start = mount

    @property
    def pid(self) -> int | None:
        return self.child.pid if self.child else None

    def alive(self) -> bool:
        """The FUSE process runs and the mount answers."""
        return bool(self.child and self.child.alive() and os.path.ismount(self.path))

    def kill(self) -> None:
        """SIGKILLs the FUSE process, leaving a dead mount: operations on it fail with ENOTCONN.

        (rclone: a stat of a recently seen path may still succeed from the kernel's attribute
        cache for up to --attr-timeout, 1 s by default.)"""
        if self.child:
            self.child.kill()

    def remount(self, timeout: float = 20) -> "_FuseMount":
        """Unmounts (a dead mount too) and mounts again with the same options."""
        self.unmount()
        return self.mount(timeout)

    def unmount(self, timeout: float = 10) -> None:
        """fusermount -u (lazy when busy or dead); the FUSE process then exits, or is stopped by PID."""
        if is_mounted(self.path):
            force_unmount(self.path, timeout)
        if self.child:
            self.child.wait(5)  # a FUSE process exits once unmounted
            self.child.stop()  # SIGTERM/SIGKILL if not; also what it left behind (sshfs's ssh)
            self.child = None

    def stop(self) -> None:
        if self in _LIVE:
            _LIVE.remove(self)
        self.unmount()

    def log(self) -> str:
        return self.child.log() if self.child else (self.log_path.read_text(errors="replace")[-6000:] if self.log_path.exists() else "")

    def __enter__(self):
        return self.mount()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path} pid={self.pid}>"


class SshfsMount(_FuseMount):
    """`sshfs -f root@127.0.0.1:REMOTE_PATH MOUNTPOINT` against an SshServer.

    dir_cache=False (sshfs's `dir_cache=no`) makes a file created elsewhere visible at once;
    with the cache (sshfs's default) it can take ~20 s (dcache_timeout)."""

    kind = "sshfs"

    def __init__(self, server: SshServer, remote_path: Path | str, mountpoint: Path | str,
                 dir_cache: bool = False, extra_opts: Sequence[str] = (), log_path: Path | None = None):
        mountpoint = Path(mountpoint)
        super().__init__(mountpoint, log_path or mountpoint.parent / f"{mountpoint.name}.sshfs.log")
        self.server, self.remote_path = server, str(remote_path)
        self.dir_cache, self.extra_opts = dir_cache, list(extra_opts)

    def _argv(self) -> list[str]:
        opts = self.server.ssh_options() + [f"dir_cache={'yes' if self.dir_cache else 'no'}"] + self.extra_opts
        return [require_tool("sshfs"), "-f", f"{self.server.user}@{HOST}:{self.remote_path}", str(self.path),
                "-F", "/dev/null", "-p", str(self.server.port), "-o", ",".join(opts)]


# ----------------------------------------------------------------------------- Samba + rclone

class SambaServer(_Server):
    """`smbd --foreground` on 127.0.0.1:<free port> with one writable share `[spool]` on SHARE_PATH.

    Auth: user `root` with a random password in a tdbsam under the state dir (no system user is
    touched; the share maps to root). MAX_WRITE is the server's `smb2 max write` (Samba's default
    is 8 MiB; Windows clients want >= 64 KiB; smbclient and rclone work with 4 KiB): clients never
    write more per request, which is what lets smbclient_put_in_pieces grow a file in steps of it.
    Everything else (locks, state, cache, pid, private, ncalrpc) lives in STATE_DIR, and
    samba-dcerpcd is not started on demand (`rpc start on demand helpers = no`)."""

    share = "spool"
    user = "root"
    host = HOST

    def __init__(self, share_path: Path | str, state_dir: Path | str | None = None, port: int | None = None,
                 max_write: int = 4096, extra_global: Sequence[str] = (), extra_share: Sequence[str] = ()):
        self.share_path = Path(share_path)
        self._state = _StateDir(state_dir, "vsp-smb-")
        self.dir = self._state.path
        self.port = port or free_port()
        self.max_write = max_write
        self.password = "pw-" + os.urandom(8).hex()
        self.config = self.dir / "smb.conf"
        self.extra_global, self.extra_share = list(extra_global), list(extra_share)
        self.child: _Child | None = None

    @property
    def unc(self) -> str:
        return f"//{HOST}/{self.share}"

    def _write_config(self) -> None:
        d = self.dir
        for sub in ("lock", "state", "cache", "pid", "private", "ncalrpc", "binddns", "log"):
            (d / sub).mkdir(exist_ok=True)
        lines = [
            "[global]",
            "server role = standalone server",
            f"smb ports = {self.port}",
            "bind interfaces only = yes",
            f"interfaces = {HOST}",
            "disable netbios = yes",
            f"lock directory = {d}/lock",
            f"state directory = {d}/state",
            f"cache directory = {d}/cache",
            f"pid directory = {d}/pid",
            f"private dir = {d}/private",
            f"ncalrpc dir = {d}/ncalrpc",
            f"binddns dir = {d}/binddns",
            f"log file = {d}/log/log.%m",
            f"passdb backend = tdbsam:{d}/private/passdb.tdb",
            "usershare path =",
            "rpc start on demand helpers = no",
            "load printers = no",
            "printing = bsd",
            "printcap name = /dev/null",
            "disable spoolss = yes",
            "map to guest = never",
            f"smb2 max write = {self.max_write}",
            "log level = 1",
            *self.extra_global,
            f"[{self.share}]",
            f"path = {self.share_path}",
            "read only = no",
            "browseable = yes",
            f"valid users = {self.user}",
            "force user = root",
            "create mask = 0644",
            "directory mask = 0755",
            "map archive = no",
            *self.extra_share,
        ]
        self.config.write_text("\n".join(lines) + "\n")

    def start(self) -> "SambaServer":
        smbd, smbpasswd = require_tool("smbd"), require_tool("smbpasswd")
        require_tool("smbclient")
        self.share_path.mkdir(parents=True, exist_ok=True)
        self._write_config()
        added = subprocess.run([smbpasswd, "-c", str(self.config), "-a", "-s", self.user],
                               input=f"{self.password}\n{self.password}\n", capture_output=True, text=True)
        if added.returncode:
            raise NetfsError(f"smbpasswd -a failed: {added.stdout}{added.stderr}")
        self.child = _Child("smbd", [smbd, "--foreground", "--no-process-group", "--debug-stdout",
                                     "-s", str(self.config)], self.dir / "smbd.log").start()
        _LIVE.append(self)
        try:
            wait_for(self._listening, 20, f"smbd on {HOST}:{self.port}", proc=self.child)
            # Listening is not quite serving (the first session may race its setup): retry a listing.
            last = []

            def serves() -> bool:
                last[:] = [self.smbclient("ls", check=False)]
                return last[0].returncode == 0
            try:
                wait_for(serves, 20, "smbclient ls", interval=0.2, proc=self.child)
            except NetfsError as e:
                raise NetfsError(f"{e}\nlast smbclient: {last[0].stdout}{last[0].stderr}" if last else str(e)) from None
        except BaseException:
            self.stop()
            raise
        return self

    def _listening(self) -> bool:
        try:
            socket.create_connection((HOST, self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def smbclient_argv(self, *extra: str) -> list[str]:
        return [require_tool("smbclient"), self.unc, "-p", str(self.port), "-s", str(self.config),
                "-U", f"{self.user}%{self.password}", "-m", "SMB3", *extra]

    def smbclient(self, *commands: str, check: bool = True, timeout: float = 60, cwd: Path | str | None = None
                  ) -> subprocess.CompletedProcess:
        """Runs smbclient commands (`put a b`, `ls`, ...) against the share; raises on failure when CHECK."""
        done = subprocess.run(self.smbclient_argv("-c", "; ".join(commands)), capture_output=True, text=True,
                              timeout=timeout, cwd=cwd, stdin=subprocess.DEVNULL)
        out = done.stdout + done.stderr
        if check and (done.returncode or "NT_STATUS_" in out):
            raise NetfsError(f"smbclient {commands}: exit {done.returncode}\n{out}\n{self.log()}")
        return done



class RcloneSmbMount(_FuseMount):
    """`rclone mount share:spool MOUNTPOINT` with rclone's smb backend against a SambaServer.

    The config (password obscured with `rclone obscure`) and the VFS cache live in a temp dir.
    DIR_CACHE_TIME None keeps rclone's default (5m: files created elsewhere stay invisible that
    long); tests usually want "1s". rclone's smb backend cannot poll for changes."""

    kind = "rclone"

    def __init__(self, samba: SambaServer, mountpoint: Path | str, extra_opts: Sequence[str] = (),
                 dir_cache_time: str | None = None, log_path: Path | None = None):
        mountpoint = Path(mountpoint)
        super().__init__(mountpoint, log_path or mountpoint.parent / f"{mountpoint.name}.rclone.log")
        self.samba, self.extra_opts, self.dir_cache_time = samba, list(extra_opts), dir_cache_time
        self._state: _StateDir | None = None

    def _env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RCLONE_")}
        env["XDG_CONFIG_HOME"] = env["XDG_CACHE_HOME"] = str(self._state.path)
        return env

    def _argv(self) -> list[str]:
        rclone = require_tool("rclone")
        if self._state is None:
            self._state = _StateDir(None, "vsp-rclone-")
            obscured = subprocess.run([rclone, "obscure", "-"], input=self.samba.password, capture_output=True,
                                      text=True, check=True).stdout.strip()
            (self._state.path / "rclone.conf").write_text(
                f"[share]\ntype = smb\nhost = {HOST}\nport = {self.samba.port}\nuser = {self.samba.user}\n"
                f"pass = {obscured}\n")
        argv = [rclone, "--config", str(self._state.path / "rclone.conf"), "mount", f"share:{self.samba.share}",
                str(self.path), "--cache-dir", str(self._state.path / "cache")]
        if self.dir_cache_time is not None:
            argv += ["--dir-cache-time", self.dir_cache_time]
        return argv + self.extra_opts

    def stop(self) -> None:
        super().stop()
        if self._state:
            self._state.remove()
            self._state = None


def _piece_bounds(size: int, pieces: int, chunk: int) -> list[int]:
    """Cumulative byte counts after each piece; all but the last are multiples of CHUNK."""
    chunks = -(-size // chunk)
    if pieces < 1 or chunks < pieces:
        raise ValueError(f"{size} bytes cannot be sent in {pieces} pieces of whole {chunk}-byte writes "
                         f"(need more than {(pieces - 1) * chunk} bytes, or a smaller SambaServer max_write)")
    bounds = [min(size, (chunks * (i + 1) // pieces) * chunk) for i in range(pieces)]
    bounds[-1] = size
    return bounds


class PiecewisePut(threading.Thread):
    """One `smbclient put` whose source is a FIFO fed in PIECES over SECONDS.

    The remote file is created (size 0) when smbclient opens it, then written in place, in
    order, one piece at a time, and closed when the last piece is sent: a slow upload over SMB.
    `timeline` lists (seconds since start, bytes sent so far). Use start()/join() to run it in
    the background, or smbclient_put_in_pieces() to wait for it."""

    def __init__(self, samba: SambaServer, local_file: Path | str, remote_name: str, pieces: int, seconds: float):
        super().__init__(daemon=True, name=f"smb-put-{remote_name}")
        self.samba, self.local_file, self.remote_name = samba, Path(local_file), remote_name
        self.data = self.local_file.read_bytes()
        self.bounds = _piece_bounds(len(self.data), pieces, samba.max_write)
        self.seconds = seconds
        self.timeline: list[tuple[float, int]] = []
        self.error: BaseException | None = None
        self.output = ""

    def run(self) -> None:
        try:
            self._run()
        except BaseException as e:  # noqa: BLE001 - reported by join_checked
            self.error = e

    def _run(self) -> None:
        tmp = Path(tempfile.mkdtemp(prefix="vsp-put-"))
        fifo = tmp / "source"
        os.mkfifo(fifo)
        # iosize = max write: one chunk in flight, so each piece reaches the server when written.
        argv = self.samba.smbclient_argv("-c", f"iosize {self.samba.max_write}; put source \"{self.remote_name}\"")
        proc = subprocess.Popen(argv, cwd=tmp, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        fd = None
        try:
            def open_writer():
                try:
                    return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                except OSError as e:  # ENXIO: smbclient has not opened it yet
                    if e.errno != errno.ENXIO:
                        raise
                    if proc.poll() is not None:
                        raise NetfsError(f"smbclient exited {proc.returncode}: {proc.stdout.read().decode(errors='replace')}")
                    return None
            deadline = time.monotonic() + 30
            while (fd := open_writer()) is None:
                if time.monotonic() > deadline:
                    raise NetfsError("smbclient did not open its source in 30s")
                time.sleep(0.01)
            os.set_blocking(fd, True)
            t0 = time.monotonic()
            step = self.seconds / (len(self.bounds) - 1) if len(self.bounds) > 1 else 0
            sent = 0
            for i, end in enumerate(self.bounds):
                delay = t0 + i * step - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                view = memoryview(self.data)[sent:end]
                while view:
                    view = view[os.write(fd, view):]
                sent = end
                self.timeline.append((round(time.monotonic() - t0, 3), sent))
            os.close(fd)
            fd = None
            out, _ = proc.communicate(timeout=60)
            self.output = out.decode(errors="replace")
            if proc.returncode or "NT_STATUS_" in self.output:
                raise NetfsError(f"smbclient put exit {proc.returncode}: {self.output}")
        finally:
            if fd is not None:
                os.close(fd)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout:
                proc.stdout.close()
            shutil.rmtree(tmp, ignore_errors=True)

    def join_checked(self, timeout: float | None = None) -> list[tuple[float, int]]:
        self.join(timeout)
        if self.is_alive():
            raise NetfsError(f"upload of {self.remote_name} still running after {timeout}s")
        if self.error:
            raise self.error
        return self.timeline


def smbclient_put_in_pieces(samba: SambaServer, local_file: Path | str, remote_name: str, pieces: int, seconds: float
                            ) -> list[tuple[float, int]]:
    """Uploads LOCAL_FILE as REMOTE_NAME into the share in PIECES spread over SECONDS; blocks.

    Returns the timeline [(seconds, bytes sent)]. Pieces are whole multiples of
    samba.max_write (except the last), so the file must be larger than (pieces-1)*max_write."""
    put = PiecewisePut(samba, local_file, remote_name, pieces, seconds)
    put.run()
    if put.error:
        raise put.error
    return put.timeline


# ----------------------------------------------------------------------------- exports + fixtures

class SshExport:
    """An sshd serving EXPORT (a local folder), and any number of sshfs mounts of it ("hosts")."""

    def __init__(self, base: Path | str):
        self.base = Path(base)
        self.path = self.base / "export"
        self.path.mkdir(parents=True, exist_ok=True)
        self.server = SshServer()
        self.mounts: list[SshfsMount] = []

    def start(self) -> "SshExport":
        self.server.start()
        return self

    def mount(self, name: str | None = None, dir_cache: bool = False, extra_opts: Sequence[str] = ()) -> SshfsMount:
        name = name or f"m{len(self.mounts) + 1}"
        m = SshfsMount(self.server, self.path, self.base / f"mnt-{name}", dir_cache=dir_cache, extra_opts=extra_opts)
        self.mounts.append(m)
        return m.mount()

    def stop(self) -> None:
        errors = []
        for m in reversed(self.mounts):
            try:
                m.stop()
            except Exception as e:  # noqa: BLE001 - stop the rest, then report
                errors.append(e)
        self.server.stop()
        if errors:
            raise errors[0]

    def __enter__(self) -> "SshExport":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class SmbExport:
    """A SambaServer sharing EXPORT (a local folder), rclone mounts of it, and piecewise uploads."""

    def __init__(self, base: Path | str, max_write: int = 4096):
        self.base = Path(base)
        self.path = self.base / "export"
        self.server = SambaServer(self.path, max_write=max_write)
        self.mounts: list[RcloneSmbMount] = []

    def start(self) -> "SmbExport":
        self.server.start()
        return self

    def mount(self, name: str | None = None, dir_cache_time: str | None = "1s", extra_opts: Sequence[str] = ()
              ) -> RcloneSmbMount:
        name = name or f"r{len(self.mounts) + 1}"
        m = RcloneSmbMount(self.server, self.base / f"mnt-{name}", extra_opts=extra_opts, dir_cache_time=dir_cache_time)
        self.mounts.append(m)
        return m.mount()

    def put_in_pieces(self, local_file: Path | str, remote_name: str, pieces: int, seconds: float):
        return smbclient_put_in_pieces(self.server, local_file, remote_name, pieces, seconds)

    def stop(self) -> None:
        errors = []
        for m in reversed(self.mounts):
            try:
                m.stop()
            except Exception as e:  # noqa: BLE001
                errors.append(e)
        self.server.stop()
        if errors:
            raise errors[0]

    def __enter__(self) -> "SmbExport":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@pytest.fixture
def ssh_server():
    """A running SshServer (state in a temp dir)."""
    with SshServer() as server:
        yield server


@pytest.fixture
def ssh_export(tmp_path):
    """SshExport on tmp_path/ssh/export; call .mount("a") for each sshfs "host"."""
    with SshExport(tmp_path / "ssh") as export:
        yield export


@pytest.fixture
def samba_server(tmp_path):
    """A running SambaServer sharing tmp_path/smb-share as [spool]."""
    with SambaServer(tmp_path / "smb-share") as server:
        yield server


@pytest.fixture
def smb_export(tmp_path):
    """SmbExport on tmp_path/smb/export; .mount("a") gives an rclone smb mount (dir cache 1s)."""
    with SmbExport(tmp_path / "smb") as export:
        yield export
