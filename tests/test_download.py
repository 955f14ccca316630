"""spongebob.download and `spongebob data download`, without any network.

The network is replaced at its lowest level (``socket.create_connection``), so an offline machine is
simulated exactly; where the wiring to the ModelScope client is checked, a stand-in client records
its calls. Nothing here may ever open a real connection (CI machines are online: a slip would start
a multi-gigabyte download), so every test patches the socket first.
"""

from __future__ import annotations

import socket
import sys
import time
import types
from pathlib import Path

import pytest

from spongebob import download as D
from spongebob.cli import main


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    calls = []

    def refuse(address, timeout=None, *args, **kwargs):
        calls.append((address, timeout))
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    return calls


@pytest.fixture
def fake_client(monkeypatch):
    """A stand-in `modelscope` module whose dataset_file_download writes the file."""
    calls = []

    def dataset_file_download(dataset_id, file_path, local_dir=None, **kwargs):
        calls.append((dataset_id, file_path, local_dir))
        path = Path(local_dir) / file_path
        path.write_text('{"text": "hi"}\n', "utf-8")
        return str(path)

    monkeypatch.setitem(sys.modules, "modelscope", types.SimpleNamespace(
        dataset_file_download=dataset_file_download))  # fmt: skip
    return calls


def test_offline_fails_within_seconds_with_a_clear_message(offline, fake_client, tmp_path):
    start = time.monotonic()
    with pytest.raises(D.DownloadError, match=r"cannot reach www\.modelscope\.cn:443") as e:
        D.download(["pretrain"], tmp_path)
    assert time.monotonic() - start < 2 and "spongebob data sample" in str(e.value)
    assert offline == [(("www.modelscope.cn", 443), 3.0)] and fake_client == []


def test_the_real_client_is_stopped_by_the_offline_check(offline, tmp_path):
    pytest.importorskip("modelscope", reason="the modelscope client is an optional extra")
    start = time.monotonic()
    with pytest.raises(D.DownloadError, match="cannot reach"):
        D.download(["sft_1024"], tmp_path)
    assert time.monotonic() - start < 5 and len(offline) == 1  # not the client's 45 s of retries


def test_downloads_through_the_client_and_keeps_present_files(monkeypatch, fake_client, tmp_path):
    monkeypatch.setattr(D, "check_reachable", lambda timeout=3.0: None)
    (tmp_path / "sft_512.jsonl").write_text("old\n", "utf-8")
    log = []
    paths = D.download(["pretrain", "sft_512.jsonl"], tmp_path, log=log.append)
    assert paths == [tmp_path / "pretrain.jsonl", tmp_path / "sft_512.jsonl"]
    assert fake_client == [(D.DATASET, "pretrain.jsonl", str(tmp_path))]
    assert (tmp_path / "sft_512.jsonl").read_text() == "old\n" and "already in" in log[0]
    D.download(["sft_512"], tmp_path, force=True, log=log.append)
    assert fake_client[-1][1] == "sft_512.jsonl"


def test_errors_name_the_problem(monkeypatch, fake_client, tmp_path):
    with pytest.raises(D.DownloadError, match="unknown data file 'pretrain.txt'"):
        D.download(["pretrain.txt"], tmp_path)
    monkeypatch.setattr(D, "check_reachable", lambda timeout=3.0: None)

    def broken(*args, **kwargs):
        raise RuntimeError("HTTP 404")

    monkeypatch.setitem(sys.modules, "modelscope", types.SimpleNamespace(
        dataset_file_download=broken))  # fmt: skip
    with pytest.raises(
        D.DownloadError, match="r1_1024.jsonl: the ModelScope client failed: HTTP 404"
    ):
        D.download(["r1_1024"], tmp_path)


def test_missing_client_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "modelscope", None)  # import fails
    with pytest.raises(D.DownloadError, match=r"pip install 'spongebob\[download\]'"):
        D.download(["pretrain"], tmp_path)


def test_cli_download_offline_is_one_line_and_exit_2(fake_client, tmp_path, capsys):
    assert main(["data", "download", "pretrain", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("spongebob: error: cannot reach") and "\n" not in err
