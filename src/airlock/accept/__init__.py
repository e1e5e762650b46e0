"""``airlock accept``: the proof a site files before a model goes live.

``record`` serves a spec on staging and writes each prompt's greedy answer with the weights' digest,
the engine, its version and the hardware (the golden file, carried by pack as a plain file).
``check`` serves the installed spec on the air-gapped side inside a loopback-only network namespace,
replays the prompts, compares (exact on the same platform, else a stated tolerance), times them
against floors, verifies the run's audit chain, records every attempt to reach the outside, and
writes a report (JSON and HTML) signed with the site's key. docs/accept.md has the whole story.

Example::

    golden = record(RecordOptions(spec, prompts, out=Path("golden.json")), settings)
    report = run_check(CheckOptions(spec, "airlock.yaml", golden, "golden.json", out=Path("report")), settings)
    report.outcome  # 'pass'
"""
