"""Which process holds keys made ahead, and whether it can still be running.

The vault makes data keys ahead (:meth:`privacy.keys.vault.Vault.reserve_owners`); a process that
dies leaves its pool's keys in the key file, and only a process that is gone may have them
removed: a live one can still hand out an id of its pool, or be writing a value under one. A
key file in WAL mode is shared only by processes of one machine (SQLite's WAL needs shared
memory), so "gone" can be decided from the machine's own process table:

* another boot id: the machine restarted since, no process of that boot runs;
* the same boot and pid namespace, and no process with that pid and start time (a reused pid
  has another start time);
* another pid namespace of the same boot (another container): not known, never judged gone.

Linux (``/proc``) only; elsewhere a holder is never judged gone (its keys stay, as before).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")


@dataclass(frozen=True, slots=True)
class ProcessIdentity:
    """A process of this machine: boot id, pid namespace, pid and start time (clock ticks
    since boot, from ``/proc/<pid>/stat``). Empty strings where the system does not say."""

    boot_id: str
    pid_ns: str
    pid: int
    started: str

    @property
    def known(self) -> bool:
        """Whether the identity can be checked against the process table at all."""
        return bool(self.boot_id and self.pid_ns and self.started)


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _start_time(pid: int) -> str:
    stat = _read(_PROC / str(pid) / "stat")
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    _, _, rest = stat.rpartition(")")
    fields = rest.split()
    return fields[19] if len(fields) > 19 else ""  # field 22 of the whole line: starttime


def _pid_ns() -> str:
    try:
        return str((_PROC / "self" / "ns" / "pid").readlink())
    except OSError:
        return ""


def process_identity(pid: int | None = None) -> ProcessIdentity:
    """The identity of ``pid`` (default: this process); empty fields where unknown."""
    pid = os.getpid() if pid is None else pid
    boot_id = _read(_PROC / "sys" / "kernel" / "random" / "boot_id")
    return ProcessIdentity(boot_id, _pid_ns(), pid, _start_time(pid))


def is_gone(holder: ProcessIdentity | None, current: ProcessIdentity) -> bool:
    """Whether the process ``holder`` stands for cannot be running (module docstring);
    ``None``: its holder row was removed by a clean stop."""
    if holder is None:
        return True
    if not (holder.known and current.known):
        return False
    if holder.boot_id != current.boot_id:
        return True  # the machine restarted since (or the file moved machines: stopped there)
    if holder.pid_ns != current.pid_ns:
        return False  # another container on this kernel: its processes are not visible here
    return _start_time(holder.pid) != holder.started
