"""accept's inputs from an untrusted side: a golden file that is huge, malformed or for another spec;
an OUT folder that holds something else; a report that changes while it is checked."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from airlock.accept.check import RUN_MARK, CheckOptions, load_golden_for, run_check
from airlock.accept.golden import MAX_GOLDEN_BYTES, read_golden
from airlock.accept.html import render_html
from airlock.accept.report import verify_report, write_signed
from airlock.accept.run import RunRequest, RunResult
from airlock.bundle.format.sign import generate_keypair
from airlock.errors import ConfigError
from airlock.settings import Settings
from unit.accept.test_check import _golden, _spec
from unit.accept.test_report import _report


def test_a_huge_golden_file_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "golden.json"
    with path.open("wb") as f:
        f.truncate(MAX_GOLDEN_BYTES + 1)  # sparse: no disk spent
    with pytest.raises(ConfigError, match="larger than 64 MiB"):
        read_golden(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{", "the file: Invalid JSON"),
        (
            '{"version": 1}',
            "created: Field required; airlock_version: Field required; sampling: Field required",
        ),
        ("[]", "the file: Input should be an object"),
    ],
)
def test_a_malformed_golden_file_is_one_short_line(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "golden.json"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        read_golden(path)
    message = caught.value.message
    assert expected in message and "\n" not in message and "pydantic.dev" not in message, message


def test_a_golden_file_for_other_models_is_refused_before_serving(tmp_path: Path) -> None:
    golden = _golden("b1")
    path = tmp_path / "golden.json"
    path.write_text(golden.model_copy(update={"answers": [a.model_copy(update={"model": "../../etc/x"})
                                                          for a in golden.answers]}).model_dump_json())  # fmt: skip
    with pytest.raises(
        ConfigError, match=r"no answers for any model this spec serves \(m\); .* \.\./\.\./etc/x"
    ):
        load_golden_for(_spec(tmp_path), Settings.from_env({"HOME": str(tmp_path)}), path)


def _check(tmp_path: Path, out: Path) -> list[RunRequest]:
    seen: list[RunRequest] = []

    def runner(request: RunRequest) -> RunResult:
        seen.append(request)
        return RunResult(error="faked")

    options = CheckOptions(
        spec=_spec(tmp_path), spec_source="s", golden=_golden("b1"), golden_source="g", out=out
    )
    run_check(options, Settings.from_env({"HOME": str(tmp_path)}), runner=runner)
    return seen


def test_an_out_folder_whose_run_is_not_ours_is_left_alone(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "run").mkdir(parents=True)
    (out / "run" / "precious.txt").write_text("mine")  # `--out /` names /run
    with pytest.raises(ConfigError, match="not the folder of an earlier acceptance run; it is left alone"):
        _check(tmp_path, out)
    assert (out / "run" / "precious.txt").read_text() == "mine"
    link = tmp_path / "linked"
    link.mkdir()
    os.symlink(out / "run", link / "run")
    with pytest.raises(ConfigError, match="not a folder of an earlier acceptance run"):
        _check(tmp_path, link)
    assert (out / "run" / "precious.txt").exists()


def test_an_earlier_run_folder_is_cleared(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert len(_check(tmp_path, out)) == 1
    assert (out / "run" / RUN_MARK).is_file()
    (out / "run" / "stale.log").write_text("old")
    _check(tmp_path, out)
    assert not (out / "run" / "stale.log").exists() and (out / "run" / RUN_MARK).is_file()


def test_the_report_parsed_is_the_one_whose_signature_was_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = generate_keypair(tmp_path / "site.key")
    report = _report()
    write_signed(tmp_path, report, render_html(report), keys.private)
    json_path = tmp_path / "report.json"
    signed = json_path.read_bytes()
    swapped = signed.replace(b'"outcome": "fail"', b'"outcome": "pass"')
    assert swapped != signed
    reads = {"n": 0}
    real = Path.read_bytes

    def racing(self: Path) -> bytes:  # the file is swapped right after its first read
        if self == json_path:
            reads["n"] += 1
            return signed if reads["n"] == 1 else swapped
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", racing)
    parsed, _, _ = verify_report(json_path, [keys.public])
    assert parsed.outcome == "fail"


def test_a_host_without_the_namespace_tools_is_told_before_the_weights_are_hashed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    import airlock.accept.identity

    hashed: list[object] = []

    def model_records(*args: object) -> list[object]:
        hashed.append(args)
        return []

    which = shutil.which
    monkeypatch.setattr(airlock.accept.identity, "model_records", model_records)
    monkeypatch.setattr(shutil, "which", lambda name: None if name == "unshare" else which(name))
    options = CheckOptions(
        spec=_spec(tmp_path), spec_source="s", golden=_golden("b1"), golden_source="g", out=tmp_path / "out"
    )
    with pytest.raises(ConfigError, match="needs root, unshare and ip"):
        run_check(options, Settings.from_env({"HOME": str(tmp_path)}))
    assert hashed == [] and not (tmp_path / "out").exists()


def test_an_out_that_cannot_be_a_folder_is_one_line(tmp_path: Path) -> None:
    out = tmp_path / "a-file"
    out.write_text("not a folder")
    with pytest.raises(ConfigError, match=r"cannot make .*a-file/run"):
        _check(tmp_path, out)


def test_record_refuses_a_folder_as_out_before_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import airlock.accept.record
    from airlock.accept.golden import Message, Prompt
    from airlock.accept.record import RecordOptions, record

    def no_hashing(*args: object) -> list[object]:
        raise AssertionError("the weights were hashed before --out was checked")

    monkeypatch.setattr(airlock.accept.record, "model_records", no_hashing)
    prompts = [Prompt(id="p", messages=[Message(role="user", content="hi")])]
    with pytest.raises(ConfigError, match="is a folder"):
        record(
            RecordOptions(spec=_spec(tmp_path), prompts=prompts, out=tmp_path),
            Settings.from_env({"HOME": str(tmp_path)}),
        )
