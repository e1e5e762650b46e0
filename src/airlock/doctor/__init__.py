"""``airlock doctor``: checks of the host a site serves from, read from its own state.

Every system read goes through a :class:`~airlock.doctor.host.Host` (run a program, read a file, the
environment, disk space, a bind on the gateway's port), so tests feed recorded outputs of real tools.
Nothing here sends a packet to any address but the one an operator names with ``--probe``.

Example::

    report = run_doctor(DoctorOptions(spec=Path("airlock.yaml")))
    report.worst, report.exit_code   # ('warn', 30)
"""

from airlock.doctor.model import Check, DoctorOptions, DoctorReport
from airlock.doctor.run import run_doctor

__all__ = ["Check", "DoctorOptions", "DoctorReport", "run_doctor"]
