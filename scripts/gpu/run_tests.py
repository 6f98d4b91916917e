#!/usr/bin/env python3
"""Runs every artifact of gpu-bundle/ through moe-run --check on the GPU.

Called by `scripts/gpu-run.sh device` (read that first); standard library
only. For each artifact listed in <bundle>/index.txt and each token count T:

    moe-run <artifact> [--all] --tokens T --seed S --check [--cuda-graphs]

(--all for a compiled model; --cuda-graphs for the index's `graphs` lines:
the checked call replays a CUDA graph captured on other inputs.)

with a per-run timeout. The runs go in rounds, one token count per round in
the order of --tokens (default 1, 1000, 64, 4096, 3: the few-token kernel
set, the BM = 128 set, the default set, then the largest and an odd
count), every artifact once per round, --jobs runs at a time: when the
budget ends early, every artifact has been checked at the first counts
rather than the first artifacts at every count. After a timeout the larger
counts of that artifact are not tried. No run starts after --budget seconds
(counted from --start), and none runs past it by more than a few seconds, so
that the table (sorted by artifact, then T) is always written.

Prints one table (artifact | T | seed | s | result), where result is

    ok <rel err>                   every check line ok (largest ||out-ref||/||ref||);
                                   "(dropped count not compared: ties)" under
                                   capacity dispatch with near or order ties
                                   (the tokens they cannot change compared)
    MISMATCH rel err X (...)       a check line failed (X the largest failing error)
    not comparable (...)           near-tie tokens under capacity dispatch of a
                                   Cartesian layer (no per-token exclusion), or
                                   every token a near tie (none compared)
    error: <first line>            moe-run failed (its first stderr line)
    timeout after N s              killed
    not run: ...                   time budget spent, or an earlier timeout

A run that fails with a CUDA error, or (on a GPU) with a MISMATCH, is run
once more with MOE_CUDA_SYNC=1 (the runtime waits after every launch and
names the kernel that faulted; --diagnose of them at most, budget
permitting), and what that run said is appended to its result:
`| with MOE_CUDA_SYNC=1: kernel <name> (grid ...) failed ...` for a fault,
`| ok with MOE_CUDA_SYNC=1 ...` when waiting after each launch hides it (an
ordering problem between launches), `| same with MOE_CUDA_SYNC=1` else.

then the failures again (capped, so they stay in the tail of the output) and
one line `gpu-tests: N passed, N failed` (+ what was not comparable / not
run). The table also goes to --results; each finished run is appended to
--progress as it completes, and the full stdout/stderr of failing runs go to
--logs, so a run killed from outside still leaves something.

Exit status: 0 when every run passed; 1 when any failed or was not run.
With --fake (the fake driver, which runs no kernels: every output is 0):
MISMATCH is expected and not a failure; exit 1 only for errors, timeouts
and runs not made.
"""

import argparse
import concurrent.futures as cf
import os
import re
import signal
import subprocess
import sys
import threading
import time

REL = re.compile(r"\|\|out-ref\|\|/\|\|ref\|\| = ([0-9.eE+\-naif]+)")


def read_index(bundle):
    """[(kind, name, path)] from <bundle>/index.txt: `kind name relpath`."""
    path = os.path.join(bundle, "index.txt")
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            kind, name, rel = line.split()[:3]
            out.append((kind, name, os.path.join(bundle, rel)))
    return out


def first_line(text):
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def classify(rc, stdout, stderr):
    """(status, text): status in ok / mismatch / nc / error."""
    checks = [l for l in stdout.splitlines() if l.startswith("check:")]
    # Which layer of a model each check line belongs to.
    layer, where = None, []
    for l in stdout.splitlines():
        m = re.match(r"layer (\d+) \(", l)
        if m:
            layer = m.group(1)
        if l.startswith("check:"):
            where.append(layer)
    rels_ok, bad = [], []
    nc = drop_nc = 0
    for l, w in zip(checks, where):
        m = REL.search(l)
        if l.startswith("check: dropped count not comparable"):
            # Ties under capacity dispatch: the outputs they cannot change
            # were compared on their own line; only the count is skipped.
            drop_nc += 1
        elif "not comparable" in l:
            nc += 1
        elif l.startswith("check: ok"):
            if m:
                rels_ok.append(float(m.group(1)))
        elif l.startswith("check: MISMATCH"):
            detail = []
            if w is not None:
                detail.append("layer " + w)
            if "NaN mismatch" in l:
                detail.append("NaN mismatch")
            if m:
                txt = "rel err " + m.group(1)
            else:  # e.g. "dropped = 3 (reference 2)"
                txt = l[len("check: MISMATCH"):].strip()
            bad.append((float(m.group(1)) if m else None, txt, detail))
    if rc < 0:
        try:
            sig = signal.Signals(-rc).name
        except ValueError:
            sig = "signal %d" % -rc
        msg = first_line(stderr)
        return "error", "error: killed by %s%s" % (sig, (": " + msg) if msg else "")
    if bad and rc in (0, 2):
        # The largest relative error first (NaN above all), other checks
        # (e.g. the dropped count under capacity dispatch) after.
        bad.sort(key=lambda b: (b[0] is not None,
                                float("inf") if b[0] is not None and b[0] != b[0]
                                else (b[0] or 0.0)), reverse=True)
        val, txt, detail = bad[0]
        extra = ", ".join(detail)
        more = " (+%d more)" % (len(bad) - 1) if len(bad) > 1 else ""
        return "mismatch", "MISMATCH %s%s%s" % (txt, " (%s)" % extra if extra else "", more)
    if rc != 0:
        msg = first_line(stderr) or first_line(stdout) or "exit status %d" % rc
        return "error", "error: " + msg
    if not checks:
        return "error", "error: moe-run printed no check line"
    if nc:
        return "nc", "not comparable (%d check%s: near ties)" % (nc, "s" if nc > 1 else "")
    note = " (dropped count not compared: ties)" if drop_nc else ""
    return "ok", ("ok %.3g" % max(rels_ok) if rels_ok else "ok") + note


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", required=True, help="directory with moe-run")
    p.add_argument("--bundle", default="gpu-bundle")
    p.add_argument("--tokens", default="1,1000,64,4096,3",
                   help="token counts, one round each, in this order")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--jobs", type=int, default=0, help="parallel moe-run processes")
    p.add_argument("--timeout", type=float, default=60, help="seconds per run")
    p.add_argument("--budget", type=float, default=540,
                   help="no run starts (or lasts) beyond this many seconds after --start")
    p.add_argument("--start", type=float, default=0, help="epoch seconds (default: now)")
    p.add_argument("--filter", default="", help="regex on artifact names (kind/name)")
    p.add_argument("--fake", action="store_true")
    p.add_argument("--results", default="", help="write the table here too")
    p.add_argument("--progress", default="", help="append each finished run here")
    p.add_argument("--logs", default="", help="directory for the output of failing runs")
    p.add_argument("--max-logs", type=int, default=100)
    p.add_argument("--diagnose", type=int, default=24,
                   help="failing runs rerun with MOE_CUDA_SYNC=1, at most")
    a = p.parse_args()

    start = a.start or time.time()
    deadline = start + a.budget
    tokens = [int(t) for t in a.tokens.split(",") if t.strip()]
    jobs = a.jobs or min(8, os.cpu_count() or 1)
    moe_run = os.path.join(a.bin, "moe-run")
    arts = read_index(a.bundle)
    if a.filter:
        rx = re.compile(a.filter)
        arts = [x for x in arts if rx.search(x[0] + "/" + x[1])]
    if not arts:
        print("gpu-tests: no artifacts (index %s, filter '%s')" % (
            os.path.join(a.bundle, "index.txt"), a.filter))
        return 1
    if a.logs:
        os.makedirs(a.logs, exist_ok=True)
    lock = threading.Lock()
    results = {}  # (artifact index, T index) -> (label, T, seed, secs, status, text)
    logs_written = [0]
    done = [0]
    diagnosed = [0]
    total = len(arts) * len(tokens)

    def record(key, row, out=""):
        with lock:
            results[key] = row
            done[0] += 1
            if a.progress:
                with open(a.progress, "a") as f:
                    f.write("%s | %d | %d | %s | %s\n" % (row[0], row[1], row[2],
                                                         row[3], row[5]))
            if out and a.logs and logs_written[0] < a.max_logs:
                logs_written[0] += 1
                path = os.path.join(a.logs, "%s_T%d.txt" % (
                    row[0].replace("/", "_"), row[1]))
                with open(path, "w") as f:
                    f.write(out[-16000:])
            if done[0] % 100 == 0:
                print("gpu-tests: %d/%d runs done, %.0f s" % (
                    done[0], total, time.time() - start), file=sys.stderr, flush=True)

    # Per artifact: the token count that timed out (larger ones are skipped).
    timed_out = {}

    def run(cmd, limit, env=None):
        """(status, text, stdout, stderr, returncode, seconds, timed out)."""
        t0 = time.time()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, errors="replace", start_new_session=True,
                                env=env)
        try:
            out, err = proc.communicate(timeout=limit)
            status, text = classify(proc.returncode, out, err)
            return status, text, out, err, proc.returncode, time.time() - t0, False
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            out, err = proc.communicate()
            text = "timeout after %g s%s" % (
                round(limit, 1), "" if limit >= a.timeout else " (time budget)")
            return "error", text, out, err, proc.returncode, time.time() - t0, True

    def diagnose(cmd, status, text):
        """The rerun of a failing run with MOE_CUDA_SYNC=1: (suffix, log)."""
        gpu_error = status == "error" and ("CUDA_ERROR" in text or "on the GPU" in text)
        if not (gpu_error or (status == "mismatch" and not a.fake)):
            return "", ""
        left = deadline - time.time()
        with lock:
            if diagnosed[0] >= a.diagnose or left <= 5:
                return "", ""
            diagnosed[0] += 1
        env = dict(os.environ, MOE_CUDA_SYNC="1")
        # A graph run cannot wait after each launch: rerun it without.
        graphs = "--cuda-graphs" in cmd
        if graphs:
            cmd = [c for c in cmd if c != "--cuda-graphs"]
        st, tx, out, err, rc, _, _ = run(cmd, min(a.timeout, left), env)
        if graphs and (st == "ok" or st == "nc"):
            suffix = " | %s without CUDA graphs, with MOE_CUDA_SYNC=1 (the " \
                     "graph's capture or replay is at fault?)" % tx
        elif st == "ok" or st == "nc":
            suffix = " | %s with MOE_CUDA_SYNC=1 (hidden by a wait after each " \
                     "launch: an ordering problem between launches?)" % tx
        elif st == status and tx == text:
            suffix = " | same with MOE_CUDA_SYNC=1"
        else:
            suffix = " | with MOE_CUDA_SYNC=1: " + (tx[len("error: "):]
                                                    if tx.startswith("error: ") else tx)
        log = "$ MOE_CUDA_SYNC=1 %s\nexit: %s\n--- stdout\n%s\n--- stderr\n%s\n" % (
            " ".join(cmd), rc, out, err)
        return suffix, log

    def worker(task):
        ti, ai = task
        kind, name, path = arts[ai]
        label = kind + "/" + name
        t = tokens[ti]
        seed = a.seed + 1000 * ai + t
        with lock:
            stop = timed_out.get(ai)
        if stop is not None and t > stop:
            record((ai, ti), (label, t, seed, "-", "notrun",
                              "not run: T=%d timed out" % stop))
            return
        left = deadline - time.time()
        if left <= 1:
            record((ai, ti), (label, t, seed, "-", "notrun", "not run: time budget spent"))
            return
        limit = min(a.timeout, left)
        cmd = [moe_run, path] + (["--all"] if kind == "model" else []) + [
            "--tokens", str(t), "--seed", str(seed), "--check"] + (
            ["--cuda-graphs"] if kind == "graphs" else [])
        status, text, out, err, rc, secs, killed = run(cmd, limit)
        secs = "%.0f" % secs if killed else "%.2f" % secs
        if killed:
            with lock:
                timed_out[ai] = min(t, timed_out.get(ai, t))
        log = ""
        if status in ("error", "mismatch") and not (a.fake and status == "mismatch"):
            log = "$ %s\nexit: %s\n--- stdout\n%s\n--- stderr\n%s\n" % (
                " ".join(cmd), rc, out, err)
            suffix, more = diagnose(cmd, status, text)
            text += suffix
            log += more
        record((ai, ti), (label, t, seed, secs, status, text), log)

    tasks = [(ti, ai) for ti in range(len(tokens)) for ai in range(len(arts))]
    with cf.ThreadPoolExecutor(max_workers=jobs) as ex:
        list(ex.map(worker, tasks))

    rows = [results[k] for k in sorted(results, key=lambda k: (k[0], tokens[k[1]]))]
    w = max(len("artifact"), max(len(r[0]) for r in rows))
    lines = ["%-*s | %5s | %7s | %6s | %s" % (w, "artifact", "T", "seed", "s", "result"),
             "-" * (w + 40)]
    for r in rows:
        lines.append("%-*s | %5d | %7d | %6s | %s" % (w, r[0], r[1], r[2], r[3], r[5]))
    counted = {s: sum(1 for r in rows if r[4] == s)
               for s in ("ok", "mismatch", "error", "nc", "notrun")}
    passed = counted["ok"]
    failed = counted["mismatch"] + counted["error"]
    summary = "gpu-tests: %d passed, %d failed" % (passed, failed)
    notes = []
    if counted["nc"]:
        notes.append("%d not comparable" % counted["nc"])
    if counted["notrun"]:
        notes.append("%d not run" % counted["notrun"])
    if a.fake:
        notes.append("fake driver: a dry run, kernels not executed, MISMATCH "
                     "expected; %d errors/timeouts" % counted["error"])
    if notes:
        summary += " (" + "; ".join(notes) + ")"
    summary += " [%d artifacts x T in {%s}, %.0f s]" % (
        len(arts), ",".join(map(str, tokens)), time.time() - start)

    fails = [r for r in rows if r[4] in ("error", "notrun") or
             (r[4] == "mismatch" and not a.fake)]
    tail = []
    if fails:
        tail.append("failures (%d%s):" % (len(fails), ", first 60" if len(fails) > 60 else ""))
        for r in fails[:60]:
            tail.append("  %s T=%d seed=%d: %s" % (r[0], r[1], r[2], r[5]))
    text = "\n".join(lines + [""] + tail + [summary]) + "\n"
    sys.stdout.write(text)
    if a.results:
        with open(a.results, "w") as f:
            f.write(text)
    if a.fake:
        return 1 if counted["error"] or counted["notrun"] else 0
    return 1 if failed or counted["notrun"] else 0


if __name__ == "__main__":
    sys.exit(main())
