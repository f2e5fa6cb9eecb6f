"""The dashboard in a real browser: runs tests/browser/test_dashboard.mjs
(node + playwright-core, driving /usr/bin/chromium headless against
`build/neuralforge serve`) and passes its PASS/FAIL/SKIP lines through, so
tests/run_tests.sh counts each of its steps.

Without node, chromium, playwright-core (scripts/setup.sh installs it) or a
binary that has `serve`, the test is skipped loudly; under CI it fails.
Screenshots of every view go to $NF_SCREENSHOTS (default build/screenshots/)."""
import os
import shutil
import subprocess
import sys
import threading

from harness import NF, ROOT

SCRIPT = os.path.join(ROOT, "tests", "browser", "test_dashboard.mjs")
CHROMIUM = os.environ.get("NF_CHROMIUM", "/usr/bin/chromium")
PLAYWRIGHT = os.path.join(ROOT, "tests", "js", "node_modules", "playwright-core", "package.json")
TIMEOUT_S = 900
UPLOT = os.path.join(ROOT, "web", "node_modules", "uplot", "dist", "uPlot.iife.min.js")


def missing():
    """What the test cannot run without, or None."""
    node = shutil.which("node")
    if not node:
        return "node is not installed (scripts/setup.sh installs it)"
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is not installed (apt-get install chromium)"
    if not os.path.exists(PLAYWRIGHT):
        return "playwright-core is not installed in tests/js (run scripts/setup.sh)"
    if not os.path.exists(UPLOT):
        return "uPlot is not installed in web/ (run scripts/setup.sh)"
    binary = os.environ.get("NF_BINARY", NF)
    if not os.access(binary, os.X_OK):
        return f"{binary} is not built (make all)"
    p = subprocess.run([binary, "serve", "--help"], capture_output=True, timeout=30)
    if p.returncode != 0:
        return f"{binary} has no serve command"
    return None


def main():
    why = missing()
    if why:
        if os.environ.get("CI"):
            print(f"FAIL browser_setup: {why} (CI needs it)", flush=True)
            print("0 passed, 1 failed", flush=True)
            sys.exit(1)
        print(f"SKIP browser: {why}", flush=True)
        print("0 passed, 0 failed, 1 skipped", flush=True)
        return
    # Streamed line by line, so a person watching sees each step as it ends.
    p = subprocess.Popen(["node", SCRIPT], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    expired = []

    def expire():  # SIGTERM lets the script stop its server; SIGKILL if it hangs
        expired.append(True)
        p.terminate()
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()

    timer = threading.Timer(TIMEOUT_S, expire)
    timer.start()
    saw_fail = False
    try:
        for raw in p.stdout:
            line = raw.decode("utf-8", "replace")
            saw_fail = saw_fail or line.startswith("FAIL ")
            sys.stdout.write(line)
            sys.stdout.flush()
        rc = p.wait()
    finally:
        timer.cancel()
    timed_out = bool(expired)
    if timed_out:
        print(f"FAIL browser_timeout: killed after {TIMEOUT_S} s", flush=True)
    elif rc != 0 and not saw_fail:
        print(f"FAIL browser: test_dashboard.mjs exited {rc} without a FAIL line", flush=True)
    sys.exit(1 if rc != 0 else 0)


if __name__ == "__main__":
    main()
