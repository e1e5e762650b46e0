"""signing-key create, pack, verify, install, ls, inventory and rebuild as a user runs them: exit codes and messages."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pytest

from bundle_helpers import make_staging, write_spec
from harness import Cli, Done


@pytest.fixture
def airlock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    monkeypatch.setenv("AIRLOCK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AIRLOCK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "200")
    return Cli(capsys)


def test_the_crossing_end_to_end(airlock: Cli, tmp_path: Path) -> None:
    staging = make_staging(tmp_path / "staging")
    home = tmp_path / "home"
    keygen = airlock("signing-key", "create")
    assert keygen.returncode == 0, keygen.stderr
    assert (home / "signing" / "airlock.key").is_file()

    packed = airlock(
        "pack", str(staging.spec), "--out", str(tmp_path / "b"), "--volume-size", "100k", "--parity", "50"
    )
    assert packed.returncode == 0, packed.stderr
    assert "signed by key" in packed.stdout and "vol-0001" in packed.stdout

    untrusted = airlock("verify", str(tmp_path / "b"))
    assert untrusted.returncode == 12 and "no key is trusted" in untrusted.stderr
    (home / "trusted").mkdir()
    shutil.copy(home / "signing" / "airlock.key.pub", home / "trusted" / "staging.pub")
    ok = airlock("verify", str(tmp_path / "b"))
    assert ok.returncode == 0, ok.stderr
    assert "bundle verified" in ok.stdout

    shutil.move(tmp_path / "b" / "vol-0002", tmp_path / "away")
    missing = airlock("verify", str(tmp_path / "b"))
    assert missing.returncode == 16 and "volume 2" in missing.stderr
    assert "parity can rebuild volume 2: airlock rebuild " in missing.stderr
    rebuilt = airlock("rebuild", str(tmp_path / "b"), "--volume", "2", "--out", str(tmp_path / "new"))
    assert rebuilt.returncode == 0, rebuilt.stderr

    first = airlock("install", str(tmp_path / "b" / "vol-0001"))
    assert first.returncode == 16 and "error: mount volumes 2 and 3 and run" in first.stderr
    done = airlock("install", str(tmp_path / "b"), str(tmp_path / "new"))
    assert done.returncode == 0, done.stderr
    assert "airlock serve --config" in done.stdout

    listed = airlock("ls")
    assert listed.returncode == 0 and "local/tiny" in listed.stdout and "local/smol" in listed.stdout
    as_json = json.loads(airlock("ls", "--json").stdout)
    assert {m["repo"] for m in as_json["models"]} == {"local/tiny", "local/smol"}

    inv = airlock("inventory", "--out", str(tmp_path / "inv.json"))
    assert inv.returncode == 0 and (tmp_path / "inv.json.sig").is_file()
    delta = airlock("pack", str(staging.spec), "--out", str(tmp_path / "d"), "--base", str(tmp_path / "inv.json"),
                    "--trust", str(home / "trusted" / "staging.pub"))  # fmt: skip
    assert delta.returncode == 0, delta.stderr
    assert "left out" in delta.stdout


def test_exit_codes_for_bad_bundles(airlock: Cli, tmp_path: Path) -> None:
    staging = make_staging(tmp_path / "staging")
    assert airlock("signing-key", "create", "--out", str(tmp_path / "k.key")).returncode == 0
    pub = str(tmp_path / "k.key.pub")
    assert (
        airlock(
            "pack", str(staging.spec), "--out", str(tmp_path / "b"), "--sign", str(tmp_path / "k.key")
        ).returncode
        == 0
    )
    vol = tmp_path / "b" / "vol-0001"

    (vol / "extra.txt").write_text("x")
    extra = airlock("verify", str(vol), "--trust", pub)
    assert extra.returncode == 15 and "extra.txt" in extra.stderr
    (vol / "extra.txt").unlink()

    blob = next((vol / "blobs" / "sha256").iterdir())
    data = bytearray(blob.read_bytes())
    data[0] ^= 1
    blob.write_bytes(bytes(data))
    corrupt = airlock("verify", str(vol), "--trust", pub)
    assert corrupt.returncode == 14 and blob.name in corrupt.stderr
    assert "Traceback" not in corrupt.stderr

    manifest = vol / "manifest.json"
    manifest.write_bytes(manifest.read_bytes().replace(b"tiny", b"tinx", 1))
    tampered = airlock("verify", str(vol), "--trust", pub)
    assert tampered.returncode == 12

    assert airlock("verify", str(tmp_path), "--trust", pub).returncode == 11
    bad_size = airlock("pack", str(staging.spec), "--out", str(tmp_path / "c"), "--volume-size", "lots")
    assert bad_size.returncode == 2 and "not a size" in bad_size.stderr


def _keyed(airlock: Cli, tmp_path: Path) -> Path:
    """A key pair at tmp_path/k.key; returns the public key (trusted with --trust, not by folder)."""
    assert airlock("signing-key", "create", "--out", str(tmp_path / "k.key")).returncode == 0
    return tmp_path / "k.key.pub"


def _line(text: str, start: str) -> str:
    """The one line of ``text`` that starts with ``start`` (after indentation)."""
    found = [line.strip() for line in text.splitlines() if line.strip().startswith(start)]
    assert len(found) == 1, (start, text)
    return found[0]


def _run_printed(airlock: Cli, printed: str) -> Done:
    """Run a command line airlock printed, as a shell would split it."""
    argv = shlex.split(printed)
    assert argv[0] == "airlock", printed
    return airlock(*argv[1:])


def test_ls_and_inventory_refuse_a_store_that_does_not_exist(airlock: Cli, tmp_path: Path) -> None:
    typo = tmp_path / "TYPO"
    listed = airlock("ls", "--store", str(typo))
    assert listed.returncode == 20 and listed.stdout == ""
    assert f"error: {typo}: no store there (the folder does not exist)" in listed.stderr
    assert "`airlock install DIR --store" in listed.stderr

    inv = airlock("inventory", "--store", str(typo), "--out", str(tmp_path / "inv" / "inv.json"))
    assert inv.returncode == 20 and "no store there" in inv.stderr
    assert not typo.exists(), "a mistyped store is not created"
    assert not (tmp_path / "inv").exists(), "no inventory of nothing"

    (tmp_path / "plain").mkdir()
    plain = airlock("ls", "--store", str(tmp_path / "plain"))
    assert plain.returncode == 20 and "not an airlock store (it has no .airlock/ folder)" in plain.stderr

    default = airlock("ls")
    store = tmp_path / "home" / "store"
    assert default.returncode == 20
    assert f"error: no store at {store} yet (`airlock install DIR` creates it)" in default.stderr
    assert airlock("inventory", "--out", str(tmp_path / "inv.json")).returncode == 20
    assert not store.exists()


def test_ls_of_a_new_empty_store_is_empty_not_an_error(airlock: Cli, tmp_path: Path) -> None:
    from airlock.store.store import Store

    Store(tmp_path / "s").ensure()  # what an install makes first
    listed = airlock("ls", "--store", str(tmp_path / "s"))
    assert listed.returncode == 0 and "the store is empty" in listed.stdout


def test_pack_refuses_to_pack_unsigned_unless_told(airlock: Cli, tmp_path: Path) -> None:
    staging = make_staging(tmp_path / "staging")
    refused = airlock("pack", str(staging.spec), "--out", str(tmp_path / "b"))
    key = tmp_path / "home" / "signing" / "airlock.key"
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.strip().splitlines() == [
        f"error: no signing key at {key}: bundles are signed unless you say --no-sign "
        "(make one with `airlock signing-key create`, or pack unsigned with --no-sign)"
    ]
    assert not (tmp_path / "b").exists(), "nothing is written"

    both = airlock("pack", str(staging.spec), "--out", str(tmp_path / "b"), "--sign", "k", "--no-sign")
    assert both.returncode == 2 and "--sign and --no-sign: choose one" in both.stderr

    unsigned = airlock("pack", str(staging.spec), "--out", str(tmp_path / "b"), "--no-sign")
    assert unsigned.returncode == 0, unsigned.stderr
    assert "unsigned (--no-sign): verify and install need --allow-unsigned" in unsigned.stdout


def test_install_names_only_the_volumes_still_missing(airlock: Cli, tmp_path: Path) -> None:
    staging = make_staging(tmp_path / "staging")
    pub = _keyed(airlock, tmp_path)
    assert airlock("pack", str(staging.spec), "-o", str(tmp_path / "b"), "--sign", str(tmp_path / "k.key"),
                   "--volume-size", "100k").returncode == 0  # fmt: skip
    vols = sorted((tmp_path / "b").glob("vol-*"))
    assert len(vols) == 3
    trust = ("--trust", str(pub))
    first = airlock("install", str(vols[0]), *trust)
    assert first.returncode == 16
    assert "installed what volume 1 holds: " in first.stdout
    assert "error: mount volumes 2 and 3 and run the same command again" in first.stderr
    second = airlock("install", str(vols[1]), *trust)
    assert second.returncode == 16
    assert "error: mount volume 3 and run the same command again" in second.stderr
    assert airlock("install", str(vols[2]), *trust).returncode == 0


def test_the_command_rebuild_prints_to_check_its_volume_works(airlock: Cli, tmp_path: Path) -> None:
    staging = make_staging(tmp_path / "staging")
    pub = _keyed(airlock, tmp_path)
    assert airlock("pack", str(staging.spec), "-o", str(tmp_path / "b"), "--sign", str(tmp_path / "k.key"),
                   "--volume-size", "100k", "--parity", "50").returncode == 0  # fmt: skip
    shutil.move(tmp_path / "b" / "vol-0002", tmp_path / "away")
    out_dir = tmp_path / "new [rebuilt]"
    rebuilt = airlock(
        "rebuild", str(tmp_path / "b"), "--volume", "2", "--out", str(out_dir), "--trust", str(pub)
    )
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert f"rebuilt volume 2 at {out_dir / 'vol-0002'} from volumes 1, 3 and 4: " in rebuilt.stdout
    check = _line(rebuilt.stdout, "check it: ").removeprefix("check it: ")
    assert check == f"airlock verify --partial '{out_dir / 'vol-0002'}' --trust {pub}"
    ran = _run_printed(airlock, check)
    assert ran.returncode == 0, ran.stderr
    assert "bundle verified" in ran.stdout


def test_the_rebuild_command_verify_suggests_works(airlock: Cli, tmp_path: Path) -> None:
    staging = make_staging(tmp_path / "staging")
    pub = _keyed(airlock, tmp_path)
    assert airlock("pack", str(staging.spec), "-o", str(tmp_path / "b"), "--sign", str(tmp_path / "k.key"),
                   "--volume-size", "100k", "--parity", "50").returncode == 0  # fmt: skip
    shutil.move(tmp_path / "b" / "vol-0003", tmp_path / "away")
    missing = airlock("verify", str(tmp_path / "b"), "--trust", str(pub))
    assert missing.returncode == 16
    assert "missing volume: volume 3 of 5 is not mounted (1 file)" in missing.stderr
    assert "missing_volume" not in missing.stderr + missing.stdout
    hint = _line(missing.stderr, "parity can rebuild volume 3: ").removeprefix(
        "parity can rebuild volume 3: "
    )
    ran = _run_printed(airlock, hint.replace("NEW_FOLDER", str(tmp_path / "new")))
    assert ran.returncode == 0, ran.stderr


def test_pack_output_counts_in_words(airlock: Cli, tmp_path: Path) -> None:
    """One file is '1 file', one entry '1 entry'; a re-run over a finished pack is not 'interrupted'."""
    (tmp_path / "notes.txt").write_text("hello")
    spec = write_spec(tmp_path / "airlock.yaml", {"files": [{"path": "notes.txt"}]})
    args = ("pack", str(spec), "-o", str(tmp_path / "b"), "--no-sign")
    packed = airlock(*args)
    assert packed.returncode == 0, packed.stderr
    assert ": 1 file, 1 blob, 5 B carried on 1 volume, " in packed.stdout
    assert _line(packed.stdout, str(tmp_path / "b" / "vol-0001")).endswith("  1 entry")

    again = airlock(*args)
    assert again.returncode == 0, again.stderr
    assert "kept 5 B already there from an earlier run (re-hashed: unchanged)" in again.stdout
    assert "interrupted" not in again.stdout

    (tmp_path / "b" / "vol-0001" / "manifest.json").unlink()  # as if the last run stopped before it
    resumed = airlock(*args)
    assert "kept 5 B written by an earlier, interrupted run (re-hashed: unchanged)" in resumed.stdout


HELP_COMMANDS = [
    ("pack",), ("verify",), ("install",), ("rebuild",), ("ls",), ("inventory",), ("signing-key", "create"),
]  # fmt: skip


@pytest.mark.parametrize("command", HELP_COMMANDS, ids=" ".join)
def test_help_fits_80_columns_uncut(
    airlock: Cli, monkeypatch: pytest.MonkeyPatch, command: tuple[str, ...]
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    shown = airlock(*command, "--help")
    assert shown.returncode == 0
    assert "…" not in shown.stdout, shown.stdout
    assert all(len(line) <= 80 for line in shown.stdout.splitlines())


@pytest.mark.parametrize(
    ("command", "codes"),
    [
        ("verify", ["0  intact and complete", "11  not a bundle", "16  volumes missing (those present are intact)"]),
        ("install", ["0  installed", "16  volumes still to mount (what they held is kept)", "20  the store is locked, or lacks what a delta needs"]),
        ("rebuild", ["0  rebuilt, and checked against the manifest", "14  the rebuilt volume does not match the manifest"]),
    ],
)  # fmt: skip
def test_exit_codes_in_help_one_per_line(
    airlock: Cli, monkeypatch: pytest.MonkeyPatch, command: str, codes: list[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    lines = [line.strip() for line in airlock(command, "--help").stdout.splitlines()]
    assert "Exit codes:" in lines
    for code in codes:
        assert code in lines


def test_paths_and_commands_print_whole_and_as_they_are(
    airlock: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 80 columns a long path holding [brackets] prints unbroken and unmangled, and pastes back."""
    from airlock.cli.output import err, out

    monkeypatch.setattr(out, "width", 80)
    monkeypatch.setattr(err, "width", 80)
    deep = tmp_path / "a rather long folder name [with brackets]" / "and another [b]"
    staging = make_staging(deep / "staging")
    pub = _keyed(airlock, tmp_path)
    bundle = deep / "bundle [1]"
    packed = airlock("pack", str(staging.spec), "-o", str(bundle), "--sign", str(tmp_path / "k.key"))
    assert packed.returncode == 0, packed.stderr
    assert _line(packed.stdout, str(bundle / "vol-0001"))
    store = deep / "store [x]"
    done = airlock("install", str(bundle), "--store", str(store), "--trust", str(pub))
    assert done.returncode == 0, done.stderr
    assert f"into {store}: " in done.stdout
    serve = _line(done.stdout, "serve them: ").removeprefix("serve them: ")
    argv = shlex.split(serve)
    assert argv[:3] == ["airlock", "serve", "--config"] and Path(argv[3]).is_file()
    listed = airlock("ls", "--store", str(store))
    assert listed.returncode == 0 and _line(listed.stdout, "store ") == f"store {store}"
    checked = airlock("verify", str(bundle), "--trust", str(pub))
    assert checked.returncode == 0 and str(bundle / "vol-0001") in checked.stdout


def test_verify_and_install_speak_json(airlock: Cli, tmp_path: Path) -> None:
    staging = make_staging(tmp_path / "staging")
    pub = _keyed(airlock, tmp_path)
    assert airlock("pack", str(staging.spec), "-o", str(tmp_path / "b"), "--sign", str(tmp_path / "k.key"),
                   "--volume-size", "100k").returncode == 0  # fmt: skip
    trust = ("--trust", str(pub))
    ok = airlock("verify", str(tmp_path / "b"), "--json", *trust)
    assert ok.returncode == 0, ok.stderr
    report = json.loads(ok.stdout)
    assert report["ok"] is True and report["problems"] == [] and report["signed_by"]
    assert [v["state"] for v in report["volumes"]] == ["ok"] * 3

    vols = sorted((tmp_path / "b").glob("vol-*"))
    partial = airlock("install", str(vols[0]), "--json", *trust, "--store", str(tmp_path / "s"))
    assert partial.returncode == 16 and "error: mount volumes 2 and 3" in partial.stderr
    result = json.loads(partial.stdout)
    assert result["complete"] is False and result["mounted"] == [1] and result["needed"] == [2, 3]

    shutil.move(vols[1], tmp_path / "away")
    missing = airlock("verify", str(tmp_path / "b"), "--json", *trust)
    assert missing.returncode == 16
    report = json.loads(missing.stdout)
    assert report["missing"] == [2]
    assert [(p["kind"], p["volume"]) for p in report["problems"]] == [("missing_volume", 2)]
    assert report["volumes"][1] == {"number": 2, "role": "data", "state": "missing", "path": None}

    shutil.move(tmp_path / "away", vols[1])
    done = airlock("install", str(tmp_path / "b"), "--json", *trust, "--store", str(tmp_path / "s"))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["complete"] is True and {m["repo"] for m in result["models"]} == {
        "local/tiny",
        "local/smol",
    }
    assert Path(result["spec_path"]).is_file()
