"""The files server's throughput: one large artifact uploaded (multipart, as the clearml SDK
sends it) and downloaded through a real `bosun server`, against a plain copy of the same file on
the same disk (with fsync, as the server does), and the server's RSS while it streams.

Run `bench/run --only files` (or `.venv/bin/python bench/files_throughput.py --mib 1024`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.server_process import ServerProcess  # noqa: E402

TARGET_SHARE_OF_DISK = 0.70
CHUNK = 1 << 20


def _make(path: Path, mib: int) -> None:
    block = os.urandom(CHUNK)
    with path.open("wb") as out:
        for _ in range(mib):
            out.write(block)
        out.flush()
        os.fsync(out.fileno())


def _copy_seconds(source: Path, target: Path) -> float:
    started = time.perf_counter()
    with source.open("rb") as src, target.open("wb") as dst:
        shutil.copyfileobj(src, dst, CHUNK)
        dst.flush()
        os.fsync(dst.fileno())
    return time.perf_counter() - started


class _RssWatch:
    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.before = self.process.memory_info().rss
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> _RssWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def measure(mib: int, work: Path) -> dict[str, Any]:
    source = work / "artifact.bin"
    _make(source, mib)
    # The best of two copies: the disk at its fastest is the bar.
    copy_s = min(_copy_seconds(source, work / f"copy{n}.bin") for n in range(2))
    for n in range(2):
        (work / f"copy{n}.bin").unlink()
    with ServerProcess(str(work / "bosun.db")) as server:
        assert server.proc is not None
        name = "bench/task.0/artifacts/big/artifact.bin"
        with _RssWatch(server.proc.pid) as rss, source.open("rb") as body:
            started = time.perf_counter()
            answer = httpx.post(f"{server.url}/files", files={name: ("artifact.bin", body)},
                                timeout=None)
            upload_s = time.perf_counter() - started
        answer.raise_for_status()
        back = work / "back.bin"
        with _RssWatch(server.proc.pid) as rss_down, back.open("wb") as out:
            started = time.perf_counter()
            with httpx.stream("GET", f"{server.url}/files/{name}", timeout=None) as got:
                for chunk in got.iter_bytes(CHUNK):
                    out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
            download_s = time.perf_counter() - started
        same = back.stat().st_size == source.stat().st_size
    mb = mib * CHUNK / 1e6
    return {
        "mib": mib, "copy_mb_s": round(mb / copy_s, 1),
        "upload_mb_s": round(mb / upload_s, 1), "download_mb_s": round(mb / download_s, 1),
        "upload_share_of_copy": round(copy_s / upload_s, 3),
        "download_share_of_copy": round(copy_s / download_s, 3),
        "rss_before_mib": round(rss.before / CHUNK, 1),
        "rss_peak_upload_mib": round(rss.peak / CHUNK, 1),
        "rss_peak_download_mib": round(rss_down.peak / CHUNK, 1),
        "sizes_match": same,
    }


def table(result: dict[str, Any]) -> str:
    def verdict(share: float) -> str:
        return "met" if share >= TARGET_SHARE_OF_DISK else "**missed**"

    mib = result["mib"]
    grew = result["rss_peak_upload_mib"] - result["rss_before_mib"]
    rows = [
        "| metric | bosun files server | plain copy (same disk, fsync) | share | target "
        "| verdict |",
        "|---|---|---|---|---|---|",
        f"| upload {mib} MiB artifact (multipart) | {result['upload_mb_s']} MB/s | "
        f"{result['copy_mb_s']} MB/s | {result['upload_share_of_copy']:.0%} | >= 70 % | "
        f"{verdict(result['upload_share_of_copy'])} |",
        f"| download {mib} MiB artifact | {result['download_mb_s']} MB/s | "
        f"{result['copy_mb_s']} MB/s | {result['download_share_of_copy']:.0%} | >= 70 % | "
        f"{verdict(result['download_share_of_copy'])} |",
        f"| server RSS before / peak upload / peak download | {result['rss_before_mib']} / "
        f"{result['rss_peak_upload_mib']} / {result['rss_peak_download_mib']} MiB | | | flat | "
        f"{'met' if grew < 64 else '**missed**'} |",
    ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="artifact size (default 1024)")
    parser.add_argument("--json", type=Path, help="write the result here")
    args = parser.parse_args(argv)
    # On the disk that holds the repository, not a tmpfs: the comparison is against that disk.
    with tempfile.TemporaryDirectory(prefix="bosun-bench-files-", dir=ROOT / "bench") as work:
        print(f"[files] {args.mib} MiB artifact ...", file=sys.stderr)
        result = measure(args.mib, Path(work))
    print(json.dumps(result), file=sys.stderr)
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if result["sizes_match"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
