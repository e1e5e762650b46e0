"""The clock: a year before airlock existed is wrong (signatures' times, audit logs and TLS all read
it); ``timedatectl show`` says whether NTP keeps it (an air-gapped site needs its own time server)."""

from __future__ import annotations

from airlock.doctor.host import Host
from airlock.doctor.model import Check

EARLIEST_YEAR = 2025  # airlock's first release: a clock before it is certainly wrong
SET_CLOCK = (
    "set it (timedatectl set-time 'YYYY-MM-DD HH:MM:SS', or date -s) and point NTP at the site's time server"
)


def parse_timedatectl(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def check_clock(host: Host) -> list[Check]:
    now = host.now()
    stamp = now.strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    if now.year < EARLIEST_YEAR:
        checks = [Check("clock", "fail", f"the clock says {stamp}, before {EARLIEST_YEAR}", SET_CLOCK)]
    elif now.year > 2100:
        checks = [Check("clock", "fail", f"the clock says {stamp}: far in the future", SET_CLOCK)]
    else:
        checks = [Check("clock", "pass", f"the clock says {stamp}")]
    result = host.run(("timedatectl", "show"))
    if result is None or result.returncode != 0:
        why = "timedatectl is not installed" if result is None else "timedatectl cannot ask systemd"
        why += " (no systemd here, as in a container)" if result is not None else ""
        checks.append(
            Check("time sync", "skip", f"{why}: NTP state unknown; check chronyc tracking or ntpq -p")
        )
        return checks
    state = parse_timedatectl(result.stdout)
    if state.get("NTPSynchronized") == "yes":
        checks.append(Check("time sync", "pass", "NTP synchronized (timedatectl)"))
    elif state.get("NTP") == "yes":
        checks.append(
            Check(
                "time sync",
                "warn",
                "NTP is on but not synchronized (timedatectl): no time server answers",
                "point chrony/timesyncd at the site's time server (an air-gapped site has no pool.ntp.org)",
            )
        )
    else:
        checks.append(
            Check(
                "time sync",
                "warn",
                "NTP is off (timedatectl): the clock drifts",
                "timedatectl set-ntp true, with the site's time server configured",
            )
        )
    return checks
