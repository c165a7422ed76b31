"""Open a study's HTML report and optuna-dashboard in headless Chromium and save screenshots.

Fails (exit 1) if either page logs a console error or requests anything outside localhost
and the local file. Needs Debian's ``chromium`` and the ``playwright`` package (no browser
download: the system Chromium is used).

Run:  python scripts/screenshots.py --study demo [--storage URL] [--out docs/screenshots]
"""

import argparse
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from playwright.sync_api import sync_playwright

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _wait_for(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"the dashboard did not answer at {url}")


def _shoot(browser, url: str, path: Path, wait_ms: int) -> list[str]:
    """Screenshot ``url`` into ``path``; return console errors and off-machine requests."""
    problems: list[str] = []
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))

    def guard(route):
        parsed = urlparse(route.request.url)
        if parsed.scheme in ("file", "data", "blob") or parsed.hostname in ("127.0.0.1", "localhost"):
            return route.continue_()
        problems.append(f"network request to {route.request.url}")
        return route.abort()

    page.route("**/*", guard)
    page.goto(url, wait_until="networkidle")
    page.wait_for_timeout(wait_ms)
    page.screenshot(path=str(path), full_page=False)
    page.close()
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", required=True)
    parser.add_argument("--storage", default="sqlite:///prune-search.db")
    parser.add_argument("--artifact-dir", default="prune-search-artifacts")
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    parser.add_argument("--port", type=int, default=8093)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    report = args.out / "report.html"
    cli = [sys.executable, "-m", "prune_search"]
    subprocess.run([*cli, "report", "--study", args.study, "--storage", args.storage, "--out", str(report)], check=True)
    server = subprocess.Popen(
        [
            *cli,
            "dashboard",
            "--study",
            args.study,
            "--storage",
            args.storage,
            "--port",
            str(args.port),
            "--artifact-dir",
            args.artifact_dir,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        first_line = server.stdout.readline()
        dashboard_url = first_line.strip().split(" at ", 1)[1]
        _wait_for(f"http://127.0.0.1:{args.port}/api/studies")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_FLAGS)
            problems = _shoot(browser, report.resolve().as_uri(), args.out / "report.png", 2000)
            problems += _shoot(browser, f"{dashboard_url}/analytics", args.out / "dashboard.png", 5000)
            problems += _shoot(browser, f"{dashboard_url}/note", args.out / "dashboard-note.png", 3000)
            browser.close()
    finally:
        server.terminate()
        server.wait()
    report.unlink()
    for problem in problems:
        print(problem)
    print(f"screenshots in {args.out}: report.png, dashboard.png, dashboard-note.png; {len(problems)} problems")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
