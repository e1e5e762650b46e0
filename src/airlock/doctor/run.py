"""``run_doctor``: every check, in the order an operator fixes things (hardware, driver, containers,
space, store, port, the way out, the clock)."""

from __future__ import annotations

from airlock.doctor.clock import check_clock
from airlock.doctor.containers import check_containers
from airlock.doctor.cuda import check_images
from airlock.doctor.disk import check_disk, check_shm, check_store
from airlock.doctor.gpus import check_gpus, read_gpus
from airlock.doctor.host import Host, RealHost
from airlock.doctor.model import Check, DoctorOptions, DoctorReport
from airlock.doctor.network import (
    check_port,
    check_probes,
    check_proxies,
    check_resolver,
    check_routes,
    parse_networks,
    parse_probe,
)
from airlock.settings import Settings
from airlock.spec import Spec, load_spec
from airlock.store.db import StoreDb
from airlock.store.store import Store


def run_doctor(
    options: DoctorOptions, host: Host | None = None, settings: Settings | None = None
) -> DoctorReport:
    """Check this host (or ``host``, for tests). Bad input (a spec that does not load, a bad
    ``--site-network`` or ``--probe``) raises ConfigError before anything is checked."""
    host = host or RealHost()
    settings = settings or Settings.from_env(host.environ())
    spec: Spec | None = load_spec(options.spec) if options.spec is not None else None
    site = parse_networks(options.site_networks)
    for probe in options.probes:  # bad input is refused before anything is checked
        parse_probe(probe)
    store = Store(options.store or (spec.store if spec and spec.store else settings.store))
    db: StoreDb | None = store.load_db() if store.exists() else None

    checks: list[Check] = []
    gpus = read_gpus(host)
    checks += check_gpus(gpus, spec)
    checks += check_images(db, gpus)
    checks += check_containers(host, spec, gpus)
    checks.append(check_shm(host, spec))
    checks += check_disk(host, store, db, options.bundle)
    checks.append(check_store(store, db, deep=options.deep, progress=options.progress))
    checks.append(check_port(host, spec))
    checks += check_routes(host, site)
    checks.append(check_resolver(host, site))
    checks.append(check_proxies(host.environ()))
    checks += check_probes(host, options.probes)
    checks += check_clock(host)
    return DoctorReport(tuple(checks))
