"""Run a command inside the sandbox that ``contrib/systemd/notifyd.service`` asks of
systemd, without systemd: for tests on machines where PID 1 is something else.

    python tests/sdsandbox.py UNIT WRITABLE_DIR -- COMMAND...

What it applies, read from the unit file, the way systemd's executor does before
it execs the service:

- ``SystemCallFilter=`` (groups expanded by ``systemd-analyze syscall-filter``),
  ``SystemCallErrorNumber=``, ``SystemCallArchitectures=native``: one seccomp
  allow-list filter;
- ``MemoryDenyWriteExecute=``: no ``mmap`` that is writable and executable, no
  ``mprotect`` to executable, no ``shmat(SHM_EXEC)`` (systemd's seccomp variant,
  the strictest);
- ``RestrictAddressFamilies=``: ``socket()`` of any other family is
  ``EAFNOSUPPORT``;
- ``RestrictNamespaces=yes``, ``RestrictRealtime=yes``, ``LockPersonality=yes``;
- ``CapabilityBoundingSet=`` (empty) and ``AmbientCapabilities=`` (empty): the
  command runs as root without a single capability;
- ``NoNewPrivileges=yes`` and ``UMask=``;
- ``ProtectSystem=strict``: a private mount namespace where every mount is
  read-only, except /dev, /proc, /sys and ``WRITABLE_DIR`` (the unit's
  StateDirectory, created if need be); ``ProtectProc=`` and ``ProcSubset=pid``:
  a /proc of its own mounted with ``hidepid=`` and ``subset=pid``.

Not emulated: ``User=`` (the test's Python may live under /root, which only root
can enter: root without capabilities stands in), ``ProtectHome=`` (same reason),
``PrivateTmp=``, ``PrivateDevices=`` and the other mount-namespace settings.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import subprocess
import sys
from pathlib import Path

# libseccomp actions and comparisons (seccomp.h)
ACT_ALLOW = 0x7FFF0000
CMP_NE, CMP_EQ, CMP_GE, CMP_MASKED_EQ = 1, 4, 5, 7


def ACT_ERRNO(code: int) -> int:  # noqa: N802 - libseccomp's name
    return 0x00050000 | (code & 0xFFFF)


class ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]  # fmt: skip


def unit_settings(unit: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def syscall_groups() -> dict[str, list[str]]:
    text = subprocess.run(["systemd-analyze", "syscall-filter", "--no-pager"],
                          capture_output=True, text=True, check=True).stdout  # fmt: skip
    groups: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif current is not None and line.strip() and not line.strip().startswith("#"):
            current.append(line.strip())
    return groups


def expand(names: list[str], groups: dict[str, list[str]]) -> set[str]:
    out: set[str] = set()
    for name in names:
        if name.startswith("@"):
            out |= expand(groups[name], groups)
        else:
            out.add(name)
    return out


def allowed_syscalls(settings: dict[str, list[str]], groups: dict[str, list[str]]) -> set[str]:
    """systemd's reading of several SystemCallFilter= lines, starting with an allow list."""
    allowed: set[str] | None = None
    for value in settings.get("SystemCallFilter", []):
        deny = value.startswith("~")
        names = expand(value.lstrip("~").split(), groups)
        if allowed is None:
            if deny:
                raise SystemExit("this emulation handles an allow list first")
            allowed = expand(["@default"], groups) | names
        elif deny:
            allowed -= names
        else:
            allowed |= names
    if allowed is None:
        raise SystemExit("the unit has no SystemCallFilter=")
    return allowed


class Seccomp:
    def __init__(self) -> None:
        self.lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2")
        self.lib.seccomp_init.restype = ctypes.c_void_p
        self.lib.seccomp_init.argtypes = [ctypes.c_uint32]
        self.lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32,
                                                    ctypes.c_int, ctypes.c_uint,
                                                    ctypes.POINTER(ArgCmp)]  # fmt: skip
        self.lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        self.lib.seccomp_load.argtypes = [ctypes.c_void_p]

    def nr(self, name: str) -> int:
        return self.lib.seccomp_syscall_resolve_name(name.encode())

    def load(self, default: int, rules: list[tuple[int, str, list[tuple[int, int, int, int]]]]
             ) -> None:  # fmt: skip
        ctx = self.lib.seccomp_init(default)
        if not ctx:
            raise OSError("seccomp_init failed")
        for action, name, cmps in rules:
            nr = self.nr(name)
            if nr < 0:
                continue  # not a system call of this architecture
            array = (ArgCmp * max(len(cmps), 1))(*(ArgCmp(*c) for c in cmps))
            rc = self.lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), array)
            if rc < 0:
                raise OSError(-rc, f"seccomp_rule_add {name}: {os.strerror(-rc)}")
        rc = self.lib.seccomp_load(ctx)
        if rc < 0:
            raise OSError(-rc, f"seccomp_load: {os.strerror(-rc)}")


def protect_system(writable: Path, proc_options: str) -> None:
    """ProtectSystem=strict: everything read-only but /dev and ``writable``; a /proc
    of its own with ``proc_options`` (ProtectProc=, ProcSubset=)."""
    libc = ctypes.CDLL(None, use_errno=True)
    ms_rdonly, ms_nosuid, ms_nodev, ms_noexec = 1, 2, 4, 8
    ms_remount, ms_bind, ms_rec, ms_private = 32, 4096, 16384, 1 << 18

    def mount(src: str | None, target: str, flags: int) -> None:
        if libc.mount(src and src.encode(), target.encode(), None, flags, None) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"mount {target}: {os.strerror(e)}")

    writable.mkdir(mode=0o750, parents=True, exist_ok=True)  # as StateDirectory=
    if libc.unshare(0x00020000) != 0:  # CLONE_NEWNS
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
    mount(None, "/", ms_rec | ms_private)
    mount(str(writable), str(writable), ms_bind)
    proc_flags = ms_nosuid | ms_nodev | ms_noexec
    if proc_options and libc.mount(b"proc", b"/proc", b"proc", proc_flags, proc_options.encode()):
        raise OSError(ctypes.get_errno(), "mount /proc")
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        target = fields[4].encode().decode("unicode_escape")
        # like systemd: the API file systems stay as they are
        if target == str(writable) or target.split("/")[1] in ("dev", "proc", "sys"):
            continue
        opts = fields[5].split(",")
        flags = ms_remount | ms_bind | ms_rdonly
        flags |= (ms_nosuid if "nosuid" in opts else 0) | (ms_nodev if "nodev" in opts else 0)
        flags |= ms_noexec if "noexec" in opts else 0
        try:
            mount(None, target, flags)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.EACCES, errno.EINVAL):
                raise


def apply(unit: Path, writable: Path) -> None:
    s = unit_settings(unit)
    yes = {"yes", "true", "1", "on"}
    last_cap = int(Path("/proc/sys/kernel/cap_last_cap").read_text())  # before /proc is replaced

    if s.get("ProtectSystem") == ["strict"]:
        proc = []
        if s.get("ProtectProc", ["default"])[-1] != "default":
            proc.append(f"hidepid={s['ProtectProc'][-1]}")
        if s.get("ProcSubset", ["all"])[-1] == "pid":
            proc.append("subset=pid")
        protect_system(writable, ",".join(proc))

    libc = ctypes.CDLL(None, use_errno=True)

    def prctl(*args: int) -> None:
        if libc.prctl(*args, *[0] * (5 - len(args))) != 0:
            raise OSError(ctypes.get_errno(), f"prctl{args}")

    if s.get("CapabilityBoundingSet") == [""] and os.geteuid() == 0:
        for cap in range(last_cap + 1):
            prctl(24, cap)  # PR_CAPBSET_DROP
        prctl(47, 4)  # PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL
    if s.get("NoNewPrivileges", [""])[-1] in yes:
        prctl(38, 1)  # PR_SET_NO_NEW_PRIVS
    if "UMask" in s:
        os.umask(int(s["UMask"][-1], 8))

    sc = Seccomp()
    allow = ACT_ALLOW
    if s.get("MemoryDenyWriteExecute", [""])[-1] in yes:
        wx, x, shm_exec = 0x2 | 0x4, 0x4, 0o100000
        sc.load(allow, [
            (ACT_ERRNO(errno.EPERM), "mmap", [(2, CMP_MASKED_EQ, wx, wx)]),
            (ACT_ERRNO(errno.EPERM), "mmap2", [(2, CMP_MASKED_EQ, wx, wx)]),
            (ACT_ERRNO(errno.EPERM), "mprotect", [(2, CMP_MASKED_EQ, x, x)]),
            (ACT_ERRNO(errno.EPERM), "pkey_mprotect", [(2, CMP_MASKED_EQ, x, x)]),
            (ACT_ERRNO(errno.EPERM), "shmat", [(2, CMP_MASKED_EQ, shm_exec, shm_exec)]),
        ])  # fmt: skip

    if "RestrictAddressFamilies" in s:
        import socket

        families = {int(getattr(socket, f)) for f in s["RestrictAddressFamilies"][-1].split()}
        af_max = 46
        rules = [(ACT_ERRNO(errno.EAFNOSUPPORT), "socket", [(0, CMP_EQ, af, 0)])
                 for af in range(af_max) if af not in families]  # fmt: skip
        rules.append((ACT_ERRNO(errno.EAFNOSUPPORT), "socket", [(0, CMP_GE, af_max, 0)]))
        sc.load(allow, rules)

    if s.get("RestrictNamespaces", [""])[-1] in yes:
        # CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWTIME
        flags = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000,
                 0x40000000, 0x00000080)  # fmt: skip
        rules = [(ACT_ERRNO(errno.EPERM), "setns", [])]
        for f in flags:
            rules.append((ACT_ERRNO(errno.EPERM), "unshare", [(0, CMP_MASKED_EQ, f, f)]))
            rules.append((ACT_ERRNO(errno.EPERM), "clone", [(0, CMP_MASKED_EQ, f, f)]))
        rules.append((ACT_ERRNO(errno.ENOSYS), "clone3", []))  # as systemd: glibc falls back
        sc.load(allow, rules)

    if s.get("RestrictRealtime", [""])[-1] in yes:
        realtime = (1, 2, 6)  # SCHED_FIFO, SCHED_RR, SCHED_DEADLINE
        rule = [
            (ACT_ERRNO(errno.EPERM), "sched_setscheduler", [(1, CMP_EQ, p, 0)]) for p in realtime
        ]
        sc.load(allow, rule)

    if s.get("LockPersonality", [""])[-1] in yes:
        current = libc.personality(0xFFFFFFFF)
        sc.load(allow, [(ACT_ERRNO(errno.EPERM), "personality", [(0, CMP_NE, current, 0)])])

    # SystemCallFilter= last, as systemd does: it forbids seccomp() itself
    # (SystemCallArchitectures=native is libseccomp's default)
    code = s.get("SystemCallErrorNumber", [""])[-1]
    default = ACT_ERRNO(getattr(errno, code)) if code else 0x80000000  # KILL_PROCESS
    allowed = allowed_syscalls(s, syscall_groups())
    sc.load(default, [(allow, name, []) for name in sorted(allowed)])


def main(argv: list[str]) -> None:
    if len(argv) < 4 or argv[2] != "--":
        raise SystemExit(__doc__)
    unit, writable = Path(argv[0]), Path(argv[1]).resolve()
    command = argv[3:]
    apply(unit, writable)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
