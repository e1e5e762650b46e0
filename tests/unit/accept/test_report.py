"""The report is signed in the bundles' format and checked by `accept verify-report`; its HTML stands alone."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from airlock.accept.egress import EgressEvent
from airlock.accept.golden import ModelRecord
from airlock.accept.html import render_html
from airlock.accept.report import (
    AcceptReport,
    AnswerResult,
    CheckResult,
    Floors,
    verify_report,
    write_signed,
)
from airlock.bundle.format.sign import generate_keypair
from airlock.errors import SignatureError


def _report() -> AcceptReport:
    model = ModelRecord(name="m", digest="sha256:ab", engine="llamacpp", engine_version="b1", hardware="cpu")
    return AcceptReport(
        created="2026-01-01T00:00:00Z", airlock_version="0.1.0", outcome="fail", spec="airlock.yaml",
        golden="golden.json", golden_created="2025-12-31T00:00:00Z", comparison="exact",
        floors=Floors(max_ttft_s=30, min_tokens_per_s=1), recorded=[model], here=[model],
        checks=[
            CheckResult(name="match: m", status="fail", detail="differs at character 5"),
            CheckResult(name="no egress", status="fail", detail="pid 7 (python <script>) reached 203.0.113.5:443"),
        ],
        answers=[
            AnswerResult(prompt="p", model="m", mode="exact", passed=False, detail="differs at character 5",
                         expected="Paris.", got="Paris!<b>")
        ],
        egress=[EgressEvent(kind="connect", proto="tcp", destination="203.0.113.5:443", pid=7, process="python <x>")],
    )  # fmt: skip


def test_signed_report_verifies_and_names_its_key(tmp_path: Path) -> None:
    keys = generate_keypair(tmp_path / "site.key")
    report = _report()
    written = write_signed(tmp_path, report, render_html(report), keys.private)
    assert [p.name for p in written] == ["report.json", "report.json.sig", "report.html", "report.html.sig"]
    parsed, signer, checked = verify_report(tmp_path / "report.json", [keys.public])
    assert parsed == report and signer == keys.key_id
    assert [p.name for p in checked] == ["report.json", "report.html"]


def test_a_changed_report_or_another_key_fails(tmp_path: Path) -> None:
    keys = generate_keypair(tmp_path / "site.key")
    other = generate_keypair(tmp_path / "other.key")
    report = _report()
    write_signed(tmp_path, report, render_html(report), keys.private)
    with pytest.raises(SignatureError, match="not trusted"):
        verify_report(tmp_path / "report.json", [other.public])
    html = tmp_path / "report.html"
    html.write_text(html.read_text().replace("FAIL", "PASS"))
    with pytest.raises(SignatureError, match=r"report\.html: the signature does not match"):
        verify_report(tmp_path / "report.json", [keys.public])
    data = tmp_path / "report.json"
    data.write_text(data.read_text().replace('"outcome": "fail"', '"outcome": "pass"'))
    with pytest.raises(SignatureError, match=r"report\.json: the signature does not match"):
        verify_report(data, [keys.public])


def test_a_manifest_signature_is_not_a_report_signature(tmp_path: Path) -> None:
    from airlock.bundle.format.sign import MANIFEST_CONTEXT, load_private_key, sign

    keys = generate_keypair(tmp_path / "site.key")
    data = _report().model_dump_json().encode()
    (tmp_path / "report.json").write_bytes(data)
    (tmp_path / "report.json.sig").write_bytes(sign(load_private_key(keys.private), data, MANIFEST_CONTEXT))
    with pytest.raises(SignatureError, match="signed as 'airlock manifest v1'"):
        verify_report(tmp_path / "report.json", [keys.public])


def test_html_is_self_contained_and_escaped() -> None:
    page = render_html(_report())
    assert "<script" not in page.replace("&lt;script", "")
    assert not re.search(r"""(src|href)\s*=|url\(|@import""", page)
    assert "python &lt;script&gt;" in page
    assert "Paris<mark>!&lt;b&gt;</mark>" in page  # the first difference marked, the text escaped
    assert "FAIL: 2 of 2 checks failed" in page
    assert "203.0.113.5:443" in page
