"""What scripts/fuzz-pipelines.py and scripts/fuzz-import.py share: how a
tool's ending is judged, and the driver that runs the cases in parallel."""

import concurrent.futures as cf
import subprocess


def judge(rc, err):
    """Why this ending of a tool is a failure, or None: a signal, an exit
    status other than 0 or 1, an LLVM fatal error, assertion or stack dump,
    a sanitizer report, status 1 without an error, or an error with
    status 0."""
    if rc == "timeout":
        return "timed out"
    if rc < 0:
        return f"killed by signal {-rc}"
    if rc > 1:
        return f"exit status {rc}"
    # (A sanitizer's report ends the tool with status 1 and an "ERROR:"
    # line, which would otherwise pass for a diagnosed error.)
    for marker in ("LLVM ERROR", "Assertion", "PLEASE submit", "Stack dump",
                   "AddressSanitizer", "LeakSanitizer",
                   "UndefinedBehaviorSanitizer", "runtime error:"):
        if marker in err:
            return marker
    if rc == 1 and "error" not in err.lower():
        return "exit status 1 without an error"
    if rc == 0 and "error:" in err:
        return "an error with exit status 0"
    return None


def execute(cmd, timeout):
    """(exit status or "timeout", stderr) of `cmd`."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stderr
    except subprocess.TimeoutExpired:
        return "timeout", ""


def run_all(cases, run, jobs):
    """Runs `run(case)` -> (name, why or None, kept path) over `cases` on
    `jobs` threads, prints each failure, and returns the failure count."""
    failures = 0
    with cf.ThreadPoolExecutor(jobs) as pool:
        for name, why, path in pool.map(run, cases):
            if why:
                failures += 1
                print(f"FAIL {name}: {why} ({path})", flush=True)
    return failures
