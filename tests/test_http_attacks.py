"""`serve --mode http` under slowhttptest (slowloris, slow read, range attack) keeps answering a plain curl."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving import Served, port, serving

pytestmark = pytest.mark.skipif(shutil.which("slowhttptest") is None or shutil.which("curl") is None, reason="slowhttptest and curl are needed")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Served, int]]:
    (tmp_path / "small.txt").write_bytes(b"small and plain\n")
    (tmp_path / "big.bin").write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    p = port()
    with serving(str(p), "--mode", "http", "--root", str(tmp_path), "--request-timeout", "2", "--idle-timeout", "3", "--quiet") as served:
        yield served, p
        served.stop()
        assert served.process.returncode == 0
        assert served.process.stderr is not None and served.process.stderr.read() == ""


def _probe(p: int, stop: threading.Event, results: list[tuple[str, float]]) -> None:
    while not stop.is_set() and len(results) < 200:
        started = time.monotonic()
        # another client address: the attacker's own is capped by --max-per-client, as it should be
        curl = ["curl", "-sS", "-m", "5", "--interface", "127.0.0.2", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{p}/small.txt"]
        out = subprocess.run(curl, capture_output=True, text=True, check=False)
        results.append((out.stdout, time.monotonic() - started))
        stop.wait(0.25)


def _attack(p: int, *options: str, ramp: float = 1.5) -> tuple[str, list[tuple[str, float]]]:
    """Run slowhttptest for 5 s while curl asks for a small file; give slowhttptest's verdict and curl's (status, seconds)."""
    results: list[tuple[str, float]] = []
    stop = threading.Event()
    prober = threading.Thread(target=_probe, args=(p, stop, results))
    time.sleep(0.2)
    command = ["slowhttptest", "-c", "200", "-r", "200", "-l", "5", "-p", "2", *options]
    attack = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # 200 connections at 200 a second: during that burst the loopback itself delays a new connection
        # by a SYN retransmission (1 s), with python3 -m http.server as with us; probe after it
        time.sleep(ramp)
        prober.start()
        output, _ = attack.communicate(timeout=30)
    finally:
        if attack.poll() is None:
            attack.kill()
            attack.wait()
        stop.set()
        if prober.is_alive():
            prober.join()
    verdict = re.sub(r"\x1b\[[0-9;]*m", "", output)
    found = re.search(r"Exit status:\s*(.*)", verdict)
    return (found.group(1).strip() if found else "?"), results


def _check(name: str, verdict: str, results: list[tuple[str, float]]) -> None:
    latencies = sorted(seconds for _status, seconds in results)
    median, most = latencies[len(latencies) // 2], latencies[-1]
    print(f"{name}: slowhttptest says {verdict!r}; curl {len(results)} x, median {median * 1000:.0f} ms, max {most * 1000:.0f} ms")
    assert results and all(status == "200" for status, _seconds in results), results
    assert latencies[-1] < 2.5


def test_slowloris(server: tuple[Served, int]) -> None:
    p = server[1]
    verdict, results = _attack(p, "-H", "-i", "1", "-u", f"http://127.0.0.1:{p}/small.txt")
    _check("slowloris", verdict, results)
    assert "Hit test time limit" not in verdict  # the request timeout closed them before the 5 s were up


def test_slow_read(server: tuple[Served, int]) -> None:
    p = server[1]
    verdict, results = _attack(p, "-X", "-k", "3", "-w", "512", "-y", "1024", "-n", "1", "-z", "32", "-u", f"http://127.0.0.1:{p}/big.bin")
    _check("slow read", verdict, results)


def test_range_attack(server: tuple[Served, int]) -> None:
    p = server[1]
    verdict, results = _attack(p, "-R", "-a", "10", "-b", "3000", "-u", f"http://127.0.0.1:{p}/big.bin", ramp=0.2)
    _check("range attack", verdict, results)
