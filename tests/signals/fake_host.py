"""A fake host tree (``proc``, ``sys``, ``etc``, ``run``) for :class:`~trustfabric.signals.host_agent.HostInspector`.

The default is a healthy production host: Debian 12 on kernel 6.1, ``/`` on LVM over
LUKS (dm-1 -> dm-0 ``CRYPT-``), an EDR agent running, a synchronised clock, and two
floor services listening. Every keyword changes one fact.
"""

from __future__ import annotations

from pathlib import Path

TCP_HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"


def _tcp_line(n: int, port: int, state: str = "0A") -> str:
    return f"   {n}: 0100007F:{port:04X} 00000000:0000 {state} 00000000:00000000 00:00000000 00000000  1000 0 {n}\n"


def fake_host(root: Path, *, ostype: str = "Linux", kernel: str = "6.1.0-18-amd64", os_id: str = "debian",
              os_version: str = "12", root_device: str = "/dev/mapper/vg-root", crypt: bool = True,
              processes: tuple[str, ...] = ("systemd", "sshd", "falcon-sensor"), listening: tuple[int, ...] = (20001, 24567),
              connected: tuple[int, ...] = (4444,), timesync: bool = True) -> Path:
    root = Path(root) / "host"
    (root / "proc/sys/kernel").mkdir(parents=True, exist_ok=True)
    (root / "proc/sys/kernel/ostype").write_text(ostype + "\n")
    (root / "proc/sys/kernel/osrelease").write_text(kernel + "\n")
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc/os-release").write_text(f'PRETTY_NAME="Some {os_id}"\nID={os_id}\nVERSION_ID="{os_version}"\n')
    (root / "proc/mounts").write_text(f"{root_device} / ext4 rw 0 0\nproc /proc proc rw 0 0\n"
                                      "tmpfs /run tmpfs rw 0 0\n")
    for dm, name, uuid, slaves in (("dm-0", "luks-root", "CRYPT-LUKS2-1234-luks-root" if crypt else "LVM-x", ()),
                                   ("dm-1", "vg-root", "LVM-abcd", ("dm-0",))):
        (root / f"sys/block/{dm}/dm").mkdir(parents=True, exist_ok=True)
        (root / f"sys/block/{dm}/dm/name").write_text(name + "\n")
        (root / f"sys/block/{dm}/dm/uuid").write_text(uuid + "\n")
        (root / f"sys/block/{dm}/slaves").mkdir(exist_ok=True)
        for slave in slaves:
            (root / f"sys/block/{dm}/slaves/{slave}").mkdir(exist_ok=True)
    for pid, name in enumerate(processes, start=1):
        (root / f"proc/{pid}").mkdir(exist_ok=True)
        (root / f"proc/{pid}/comm").write_text(name[:15] + "\n")
    (root / "proc/net").mkdir(exist_ok=True)
    lines = [_tcp_line(i, p) for i, p in enumerate(listening)]
    lines += [_tcp_line(len(lines) + i, p, "01") for i, p in enumerate(connected)]  # ESTABLISHED: not listening
    (root / "proc/net/tcp").write_text(TCP_HEADER + "".join(lines[: len(lines) // 2 + 1]))
    (root / "proc/net/tcp6").write_text(TCP_HEADER + "".join(lines[len(lines) // 2 + 1:]))
    flag = root / "run/systemd/timesync/synchronized"
    if timesync:
        flag.parent.mkdir(parents=True, exist_ok=True)
        flag.write_text("")
    elif flag.exists():
        flag.unlink()
    return root
