"""The demo through its HTTP API (gradio_client) against a server on a free port, and the CLI."""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path
from typing import Any

import pytest

from apps.demo import parse_auth

gradio_client = pytest.importorskip("gradio_client")


@pytest.fixture(scope="module")
def client(demo_url: str) -> Any:
    return gradio_client.Client(demo_url, verbose=False)


def _files(*paths: Path) -> list[Any]:
    return [gradio_client.handle_file(str(p)) for p in paths]


def test_the_api_lists_the_three_endpoints(client: Any) -> None:
    api = client.view_api(return_format="dict", print_info=False)
    assert {"/analyze", "/analyze_example", "/search"} <= set(api["named_endpoints"])


def test_analyze_real_xray_and_ecg(
    client: Any, real_xray: Path, real_ecg_pair: tuple[Path, Path]
) -> None:
    out = client.predict(
        gradio_client.handle_file(str(real_xray)), _files(*real_ecg_pair), api_name="/analyze"
    )
    (error, notice, xray_img, xray_info, ecg_img, ecg_info, label, table, gallery, cases,
     proto_note, proto_img, proto_pairs, proto_table) = out  # fmt: skip
    assert error == ""
    assert "Research use only" in notice and "SYNTHETIC" in notice
    assert Path(xray_img).is_file() and Path(ecg_img).is_file()
    assert xray_info["format"] == "jpeg" and ecg_info["sampling_rate_hz"] == 500.0
    confidences = [c["confidence"] for c in label["confidences"]]
    assert confidences == sorted(confidences, reverse=True) and label["label"]
    shown = [c["label"] for c in label["confidences"]]
    assert [row[0] for row in table["data"]][: len(shown)] == shown
    assert 1 <= len(gallery) <= 4 and all(Path(g["image"]).is_file() for g in gallery)
    assert len(cases["data"]) == len(gallery)
    assert proto_img and proto_pairs and proto_table["data"] and "ProtoECGNet" in proto_note


def test_zip_upload_of_a_wfdb_record(
    client: Any, real_ecg_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    archive = tmp_path / "ecg.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in real_ecg_pair:
            zf.write(p, p.name)
    out = client.predict(None, _files(archive), api_name="/analyze")
    assert out[0] == ""
    assert out[5]["leads_present"][0] == "I" and out[2] is None  # ECG only, no X-ray


def test_errors_are_readable_and_the_server_keeps_serving(
    client: Any, real_ecg_pair: tuple[Path, Path], corrupt_dicom: Path, tmp_path: Path
) -> None:
    hea, _mat = real_ecg_pair
    missing = client.predict(None, _files(hea), api_name="/analyze")
    assert "HR06000.hea needs its signal file HR06000.mat" in missing[0]
    assert not missing[6]  # no probabilities
    wrong = tmp_path / "report.txt"
    wrong.write_text("no image here")
    assert "is not accepted" in client.predict(_files(wrong)[0], None, api_name="/analyze")[0]
    big = tmp_path / "huge.png"
    big.write_bytes(b"\0" * int(1.5 * 1024 * 1024))  # over the 1 MB limit, under Gradio's 2 MB
    assert "over the limit of 1 MB" in client.predict(_files(big)[0], None, api_name="/analyze")[0]
    broken = client.predict(_files(corrupt_dicom)[0], None, api_name="/analyze")[0]
    assert "X-ray: broken.dcm:" in broken
    ok = client.predict(None, _files(*real_ecg_pair), api_name="/analyze")
    assert ok[0] == "" and ok[6]["confidences"]


def test_example_and_text_search(client: Any, demo_resources: Any) -> None:
    title = demo_resources.examples[0].title
    out = client.predict(title, api_name="/analyze_example")
    assert out[0] == "" and out[6]["confidences"] and out[8]
    err, gallery, table = client.predict(
        "ECGs with atrial fibrillation and a rapid ventricular response", "ECG", api_name="/search"
    )
    assert err == "" and gallery and {row[2] for row in table["data"]} == {"ecg"}


def test_auth_is_required_when_configured(demo_resources: Any) -> None:
    import socket

    from apps.demo import launch

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    app = launch(resources=demo_resources, port=port, auth=[("ann", "pw")], block=False, quiet=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        with pytest.raises(Exception):  # noqa: B017 - gradio_client raises a plain ValueError
            gradio_client.Client(url, verbose=False)
        with pytest.raises(Exception):  # noqa: B017
            gradio_client.Client(url, auth=("ann", "wrong"), verbose=False)
        ok = gradio_client.Client(url, auth=("ann", "pw"), verbose=False)
        assert "/analyze" in ok.view_api(return_format="dict", print_info=False)["named_endpoints"]
        _check_raw_http_auth(url)
    finally:
        app.close()


def _check_raw_http_auth(url: str) -> None:
    """Plain HTTP: the API refuses a request without the login cookie, a wrong password gets
    no cookie, and the right one opens the API."""
    import http.cookiejar
    import json
    import urllib.error
    import urllib.parse
    import urllib.request

    call = urllib.request.Request(
        url + "gradio_api/call/analyze",
        data=json.dumps({"data": [None, None]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(call, timeout=10)
    assert refused.value.code == 401

    def login(password: str) -> Any:
        opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )
        form = urllib.parse.urlencode({"username": "ann", "password": password}).encode()
        opener.open(urllib.request.Request(url + "login", data=form), timeout=10)
        return opener

    with pytest.raises(urllib.error.HTTPError) as wrong:
        login("wrong")
    assert wrong.value.code in (400, 401)
    with login("pw").open(url + "config", timeout=10) as resp:
        assert resp.status == 200 and "analyze" in resp.read().decode()


# ----------------------------------------------------------------------------- CLI
def test_parse_auth(tmp_path: Path) -> None:
    assert parse_auth("ann:s3cr:et") == [("ann", "s3cr:et")]
    f = tmp_path / "users.txt"
    f.write_text("# demo users\nbob:pw1\n\ncarol:pw2\n")
    assert parse_auth("ann:x", f) == [("ann", "x"), ("bob", "pw1"), ("carol", "pw2")]
    assert parse_auth(None, None) == []
    with pytest.raises(ValueError, match="expected user:password"):
        parse_auth("nopassword")
    with pytest.raises(ValueError, match="cannot read"):
        parse_auth(None, tmp_path / "absent.txt")


def _parse(argv: list[str]) -> argparse.Namespace:
    from medclip.cli import build_parser

    return build_parser().parse_args(argv)


def test_demo_command_reuses_the_quickstart_and_serves_it(
    quickstart_home: Path, demo_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import apps.demo
    from medclip.commands import demo as demo_cmd

    calls: list[tuple[Path, dict[str, Any]]] = []
    monkeypatch.setattr(apps.demo, "launch", lambda b, **kw: calls.append((Path(b), kw)))
    args = _parse(
        ["demo", "--quickstart-home", str(quickstart_home), "--quickstart-preset", "tiny",
         "--port", "7999", "--auth", "ann:pw", "--max-upload-mb", "5", "--no-progress"]
    )  # fmt: skip
    assert demo_cmd.run(args) == 0
    (bundle, kw) = calls[0]
    assert bundle == demo_bundle
    assert kw["host"] == "127.0.0.1" and kw["port"] == 7999
    assert kw["auth"] == [("ann", "pw")] and kw["max_upload_mb"] == 5.0
    defaults = _parse(["demo"])
    assert (defaults.host, defaults.port, defaults.quickstart_preset) == (
        "127.0.0.1",
        7860,
        "small",
    )


def test_demo_command_rejects_a_folder_that_is_not_a_bundle(tmp_path: Path) -> None:
    from medclip.cli import main

    assert main(["demo", "--bundle", str(tmp_path), "--build-only"]) == 2
    assert main(["demo", "--bundle", str(tmp_path), "--port", "0"]) == 2
