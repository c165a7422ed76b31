"""Open a study's HTML report and optuna-dashboard in headless Chromium and save screenshots.

Each screenshot is taken once its page shows the study's data (plots drawn, no "Loading"),
waiting up to ``--timeout`` seconds. Fails (exit 1) if a page stays blank that long, logs a
console error or requests anything outside localhost and the local file. Needs Debian's
``chromium`` and the ``playwright`` package (no browser download: the system Chromium is used).

Run:  python scripts/screenshots.py --study demo [--storage URL] [--out docs/screenshots]
"""

import argparse
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from playwright.sync_api import TimeoutError as PlaywrightTimeout
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


# JavaScript conditions, true once a page shows the study's data rather than an empty frame or "Loading...".
PLOTS_DRAWN = """() => {
    const plots = [...document.querySelectorAll('.js-plotly-plot')];
    return plots.length > 0 && plots.every(p => p.querySelector('.main-svg'))
        && !document.body.innerText.includes('Loading');
}"""
NOTE_SHOWN = """() => document.body.innerText.includes('prune-search study')
    && !document.body.innerText.includes('Loading')"""
SETTLE_MS = 1000  # after the data shows: plotly's transitions and fonts


def _shoot(browser, url: str, path: Path, ready: str, timeout_s: float) -> tuple[bool, list[str]]:
    """Screenshot ``url`` into ``path`` once the JavaScript condition ``ready`` holds (at most ``timeout_s``
    seconds). Returns whether it did (if not, an older file at ``path`` stays as it was) and the problems: console
    errors, off-machine requests, the page never showing its data."""
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
    try:
        page.goto(url, wait_until="networkidle", timeout=timeout_s * 1000)
        page.wait_for_function(ready, timeout=timeout_s * 1000)
    except PlaywrightTimeout:
        problems.append(f"{path.name}: {url} still showed no data after {timeout_s:g} s (blank or 'Loading...')")
        page.close()
        return False, problems
    page.wait_for_timeout(SETTLE_MS)
    page.screenshot(path=str(path), full_page=False)
    page.close()
    return True, problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", required=True)
    parser.add_argument("--storage", default="sqlite:///prune-search.db")
    parser.add_argument("--artifact-dir", default="prune-search-artifacts")
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    parser.add_argument("--port", type=int, default=8093)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--timeout", type=float, default=120, help="Seconds each page may take to show its data.")
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
    saved: list[str] = []
    problems: list[str] = []
    try:
        first_line = server.stdout.readline()
        dashboard_url = first_line.strip().split(" at ", 1)[1]
        _wait_for(f"http://127.0.0.1:{args.port}/api/studies")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_FLAGS)
            shots = [
                (report.resolve().as_uri(), "report.png", PLOTS_DRAWN),
                (f"{dashboard_url}/analytics", "dashboard.png", PLOTS_DRAWN),
                (f"{dashboard_url}/note", "dashboard-note.png", NOTE_SHOWN),
            ]
            for url, name, ready in shots:
                shown, found = _shoot(browser, url, args.out / name, ready, args.timeout)
                saved += [name] if shown else []
                problems += found
            browser.close()
    finally:
        server.terminate()
        server.wait()
        report.unlink(missing_ok=True)
    for problem in problems:
        print(problem)
    print(f"screenshots in {args.out}: {', '.join(saved) or 'none'}; {len(problems)} problems")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
