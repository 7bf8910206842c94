"""Run the openEO conformance suite (../shared/openeo-test-suite) against a fresh ``terramind-openeo serve``.

Starts the back-end on a free loopback port with a throw-away data directory and an OIDC provider entry
for the kit's mock issuer, runs ``run-suite`` for the chosen parts, prints the per-part counts and compares
the passed counts with ``baseline.json`` (per profile = the extra pytest arguments): fewer passes than
recorded, or a part that could not run, exits 1. ``--update-baseline`` records the current counts.

    python tests/backend/conformance/run_conformance.py --parts general,workflows -- -m "not longrunning"
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

log = logging.getLogger("run_conformance")

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[2]
SUITE_DIR = Path(os.environ.get("TERRAMIND_OPENEO_CONFORMANCE_KIT", REPO_ROOT.parent / "shared" / "openeo-test-suite"))
BASELINE = HERE / "baseline.json"
S2_COLLECTION = "SENTINEL2_L2A_BOLZANO"
SUMMARY = re.compile(r"^(\w+): (\d+) passed, (\d+) failed, (\d+) skipped")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(workdir: Path, oidc_port: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    config = workdir / "backend.json"
    config.write_text(json.dumps({
        "oidc_providers": [{"id": "ots-mock", "issuer": f"http://127.0.0.1:{oidc_port}", "title": "mock",
                            "scopes": ["openid"]}],
        "max_running_jobs": 4, "max_running_jobs_per_user": 4, "dask": "threads", "log_level": "WARNING",
    }))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TERRAMIND_OPENEO_")
           or k in ("TERRAMIND_OPENEO_SHARED_DATA", "TERRAMIND_OPENEO_CATALOG")}
    server_log = open(workdir / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "terramind_openeo.cli", "serve", "--config", str(config),
                             "--port", str(port), "--data-dir", str(workdir / "data")],
                            cwd=REPO_ROOT, env=env, stdout=server_log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/openeo/1.2/"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the back-end exited with {proc.returncode}; see {workdir / 'server.log'}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.3)
    stop_server(proc)
    raise RuntimeError("the back-end did not answer within 120 s")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def run_suite(url: str, parts: list[str], oidc_port: int, junit: Path | None, extra: list[str]) -> tuple[int, str]:
    cmd = ["bash", str(SUITE_DIR / "run-suite"), url, "--parts", ",".join(parts), "--s2-collection", S2_COLLECTION,
           "--oidc-port", str(oidc_port)]
    if junit:
        cmd += ["--junit", str(junit)]
    if extra:
        cmd += ["--", *extra]
    log.info("running: %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return proc.returncode, proc.stdout + proc.stderr


def parse_counts(output: str) -> dict[str, dict[str, int]]:
    counts = {}
    for line in output.splitlines():
        match = SUMMARY.match(line.strip())
        if match:
            part, passed, failed, skipped = match.groups()
            counts[part] = {"passed": int(passed), "failed": int(failed), "skipped": int(skipped)}
    return counts


def failures(junit: Path) -> list[str]:
    """``part::test: first line of the message`` for every failed or erroring test of a JUnit file."""
    import xml.etree.ElementTree as ET

    if not junit.is_file():
        return []
    out = []
    for suite in ET.parse(junit).getroot().iter("testsuite"):
        for case in suite.iter("testcase"):
            for tag in ("failure", "error"):
                node = case.find(tag)
                if node is not None:
                    message = (node.get("message") or node.text or "").strip().splitlines()
                    out.append(f"{suite.get('name', '').rsplit('.', 1)[-1]}::{case.get('name')}: "
                               f"{(message[0] if message else '')[:300]}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="collections,metadata,general,processing,workflows")
    parser.add_argument("--junit", type=Path, default=None)
    parser.add_argument("--baseline", type=Path, default=BASELINE)
    parser.add_argument("--update-baseline", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (server log, data)")
    parser.add_argument("extra", nargs="*", help="after '--': arguments for every pytest call of the suite")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[run_conformance] %(message)s")
    if not (SUITE_DIR / "run-suite").is_file():
        log.error("conformance kit not found at %s", SUITE_DIR)
        return 3
    parts = [p for p in args.parts.split(",") if p]
    profile = " ".join(args.extra) or "all"
    workdir = Path(tempfile.mkdtemp(prefix="tmo-conformance-"))
    oidc_port = free_port()
    started = time.monotonic()
    proc = None
    junit = args.junit or workdir / "junit.xml"
    try:
        proc, url = start_server(workdir, oidc_port)
        rc, output = run_suite(url, parts, oidc_port, junit, args.extra)
        failed = failures(junit)
    finally:
        if proc is not None:
            stop_server(proc)
        if args.keep:
            log.info("work dir kept: %s", workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print("\n".join(line for line in output.splitlines() if SUMMARY.match(line.strip()) or "known suite" in line))
    for line in failed:
        print("FAILED", line)
    counts = parse_counts(output)
    log.info("suite finished in %.0f s (exit %d): %s", time.monotonic() - started, rc, json.dumps(counts))
    baseline = json.loads(args.baseline.read_text()) if args.baseline.is_file() else {}
    if args.update_baseline:
        baseline.setdefault(profile, {}).update(counts)
        args.baseline.write_text(json.dumps(baseline, indent=2, sort_keys=True) + "\n")
        log.info("baseline for profile %r updated in %s", profile, args.baseline)
        return 0 if rc == 0 else 1
    status = 0 if rc == 0 else 1
    for part in parts:
        if part not in counts:
            log.error("part %s did not run to the end", part)
            status = 1
            continue
        expected = baseline.get(profile, {}).get(part, {}).get("passed")
        if expected is None:
            log.warning("no baseline for part %s (profile %r): not compared", part, profile)
        elif counts[part]["passed"] < expected:
            log.error("part %s: %d passed, baseline %d: a regression", part, counts[part]["passed"], expected)
            status = 1
        else:
            log.info("part %s: %d passed (baseline %d)", part, counts[part]["passed"], expected)
    return status


if __name__ == "__main__":
    sys.exit(main())
