#!/usr/bin/env python3
"""End-to-end benchmark: sealgate vs Postfix (issue 2 "Performance", issue 5 last paragraph).

One run: build, measure the disk's fsync capability, then for each variant (plain, and
with --dkim the DKIM variant) and each connection mode, push N messages of SIZE bytes from
C concurrent clients through sealgate and through the system Postfix into the same
implicit-TLS sink (`sealgate capture`), and print msgs/s end to end, p50/p99 submission
latency and peak RSS. Results also go to bench/results-<date>.json.

Called by bench/core.sh; see bench/README.md. Needs root (it configures the system
Postfix with postconf -e / postconf -M and starts/stops it; throwaway machines only).
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = REPO / "target" / "release"
SEALGATE = BIN / "sealgate"
LOADGEN = BIN / "examples" / "smtp_load"
FSYNC_PROBE = BIN / "examples" / "fsync_probe"
PF_CONF = Path("/etc/postfix")
PF_LOG = Path("/var/log/postfix-sealgate-bench.log")
DOMAIN = "example.com"

TARGET_RATIO = 3.0
TARGET_RATIO_DKIM = 4.0
TARGET_P99_MS = 20.0
TARGET_RSS_MIB = 50.0

started = []  # Popen objects this script started; stopped by pid in cleanup()


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(cmd, **kw):
    kw.setdefault("check", True)
    return subprocess.run([str(c) for c in cmd], **kw)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20.0, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args[0]} exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def start(cmd, logfile, **kw):
    f = open(logfile, "ab")
    p = subprocess.Popen([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT, **kw)
    started.append(p)
    return p


def stop(p, sig=signal.SIGTERM, timeout=15):
    if p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if p in started:
        started.remove(p)


def cleanup():
    for p in list(started):
        stop(p)


# ---------------------------------------------------------------- /proc helpers

def proc_status(pid, key):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1])  # kB
    except OSError:
        return None
    return None


def proc_pss_kb(pid):
    try:
        for line in open(f"/proc/{pid}/smaps_rollup"):
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def proc_cpu_s(pid):
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def children_of(ppid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            fields = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == ppid:
            out.append(int(d))
    return out


def machine_cpu():
    """(busy, total) jiffies from /proc/stat."""
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    idle = f[3] + f[4]
    return sum(f) - idle, sum(f)


class Sampler(threading.Thread):
    """Peak of the summed PSS and RSS of a process set, sampled every 200 ms."""

    def __init__(self, pids_fn):
        super().__init__(daemon=True)
        self.pids_fn = pids_fn
        self.peak_pss = 0
        self.peak_rss = 0
        self.peak_procs = 0
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            pids = self.pids_fn()
            self.peak_pss = max(self.peak_pss, sum(proc_pss_kb(p) for p in pids))
            self.peak_rss = max(self.peak_rss, sum(proc_status(p, "VmRSS") or 0 for p in pids))
            self.peak_procs = max(self.peak_procs, len(pids))
            self.halt.wait(0.2)


# ---------------------------------------------------------------- setup

def build(skip):
    if skip:
        return
    log("cargo build --release (sealgate, examples smtp_load and fsync_probe)")
    run(["cargo", "build", "--release", "--quiet", "--bin", "sealgate",
         "--example", "smtp_load", "--example", "fsync_probe"], cwd=REPO)


def fsync_probe(work, seconds):
    log(f"fsync probe: 8 writers, {seconds}s, in {work}")
    out = run([FSYNC_PROBE, "--dir", work / "fsync-probe", "--writers", "8", "--seconds", str(seconds)],
              capture_output=True, text=True).stdout
    return json.loads(out)


def make_certs(d):
    d.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, crt, ext = (d / n for n in ("ca.key", "ca.pem", "sink.key", "sink.csr", "sink.pem", "ext.cnf"))
    if crt.exists():
        return ca, crt, key
    q = dict(capture_output=True)
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", ca_key, "-out", ca, "-days", "30", "-subj", "/CN=sealgate bench CA",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"], **q)
    run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", key, "-out", csr, "-subj", "/CN=localhost"], **q)
    ext.write_text("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                   "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run(["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-out", crt, "-days", "30", "-extfile", ext], **q)
    os.chmod(key, 0o600)
    return ca, crt, key


def make_dkim_keys(d):
    d.mkdir(parents=True, exist_ok=True)
    keys = {}
    for sel, alg in (("rsa1", "rsa"), ("ed1", "ed25519")):
        k = d / f"{DOMAIN}.{sel}.key"
        if not k.exists():
            run([SEALGATE, "dkim-keygen", "--domain", DOMAIN, "--selector", sel, "--algorithm", alg, "--out", k],
                capture_output=True)
        keys[alg] = (sel, k)
    return keys


class Sink:
    """`sealgate capture` on a fixed port, restarted with a fresh folder per run."""

    def __init__(self, work, port, cert, key, kind):
        self.work, self.port, self.cert, self.key, self.kind = work, port, cert, key, kind
        self.proc = None
        self.dir = None

    def fresh(self, label):
        if self.proc:
            stop(self.proc)
        self.dir = self.work / f"sink-{label}"
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        cmd = [SEALGATE, "capture", "--implicit"]
        cmd += ["--listen", f"127.0.0.1:{self.port}", "--cert", self.cert, "--key", self.key, "--dir", self.dir]
        self.proc = start(cmd, self.work / "sink.log")
        wait_port(self.port, proc=self.proc)
        return self.dir


def load(addr_port, n, clients, size, fresh, sink_dir, label, timeout):
    loadavg = float(open("/proc/loadavg").read().split()[0])
    cmd = [LOADGEN, "--addr", f"127.0.0.1:{addr_port}", "-n", str(n), "-c", str(clients), "--size", str(size),
           "--sink-dir", sink_dir, "--sink-timeout", str(timeout), "--label", label]
    if fresh:
        cmd.append("--fresh-connections")
    r = run(cmd, capture_output=True, text=True, check=False)
    if not r.stdout.strip():
        raise RuntimeError(f"load generator failed: {r.stderr}")
    out = json.loads(r.stdout)
    out["loadavg_1m_before"] = loadavg
    if r.returncode != 0:
        log(f"  load generator: {out['errors']} errors, in sink {out['in_sink']}/{out['accepted']}: {out['first_errors']}")
    return out


def dkim_signatures(sink_dir):
    """How many DKIM-Signature headers the first captured message carries, and their a= tags."""
    emls = sorted(p for p in sink_dir.glob("*.eml") if not p.name.startswith("."))
    if not emls:
        return 0, []
    head = emls[0].read_bytes().split(b"\r\n\r\n", 1)[0].decode("latin-1")
    unfolded = head.replace("\r\n\t", " ").replace("\r\n ", " ")
    sigs = [l for l in unfolded.split("\r\n") if l.lower().startswith("dkim-signature:")]
    algs = []
    for s in sigs:
        for tag in s.split(";"):
            tag = tag.strip()
            if tag.startswith("a="):
                algs.append(tag[2:].strip())
    return len(sigs), algs


# ---------------------------------------------------------------- sealgate

def run_sealgate(args, work, sink, ca, variant, fresh, dkim_keys):
    label = f"sealgate-{variant}-{'fresh' if fresh else 'reuse'}"
    d = work / label
    shutil.rmtree(d, ignore_errors=True)
    (d / "policies").mkdir(parents=True)
    (d / "policies" / "00-all.toml").write_text('[recipients]\nallow = ["*"]\n')
    port = free_port()
    cfg = f"""# written by bench/core.py
[server]
listen = ["127.0.0.1:{port}"]
hostname = "bench.localdomain"

[spool]
dir = "{d / 'spool'}"

[upstream]
host = "localhost"
port = {sink.port}
tls = "implicit"
ca_file = "{ca}"
connections = {args.upstream_connections}

[policy]
dir = "{d / 'policies'}"

[audit]
path = "{d / 'audit.jsonl'}"
"""
    if variant == "dkim":
        for alg in ("rsa", "ed25519"):
            sel, key = dkim_keys[alg]
            cfg += f'\n[[dkim]]\ndomain = "{DOMAIN}"\nselector = "{sel}"\nkey_file = "{key}"\n'
    (d / "sealgate.toml").write_text(cfg)
    sink_dir = sink.fresh(label)
    env = dict(os.environ)
    env.setdefault("RUST_LOG", args.rust_log)
    proc = start([SEALGATE, "serve", "-c", d / "sealgate.toml"], d / "sealgate.log", env=env)
    try:
        wait_port(port, proc=proc)
        sampler = Sampler(lambda: [proc.pid])
        sampler.start()
        perf = None
        if args.perf:
            args.perf.mkdir(parents=True, exist_ok=True)
            perf = subprocess.Popen(["perf", "record", "-F", "499", "-g", "-p", str(proc.pid),
                                     "-o", str(args.perf / f"perf-{label}.data")],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1)
        cpu0, m0 = proc_cpu_s(proc.pid), machine_cpu()
        log(f"{label}: {args.n} messages, {args.clients} clients, {args.size} bytes")
        out = load(port, args.n, args.clients, args.size, fresh, sink_dir, label, args.sink_timeout)
        if perf:
            perf.send_signal(signal.SIGINT)
            perf.wait(60)
        cpu1, m1 = proc_cpu_s(proc.pid), machine_cpu()
        sampler.halt.set()
        sampler.join()
        hwm = proc_status(proc.pid, "VmHWM")
        out["system"] = "sealgate"
        out["variant"] = variant
        out["peak_rss_mib"] = (hwm or 0) / 1024
        out["peak_rss_how"] = "VmHWM of the sealgate process at the end of the run"
        out["peak_pss_mib_sampled"] = sampler.peak_pss / 1024
        out["cpu_s"] = cpu1 - cpu0
        out["cpu_ms_per_msg"] = 1000 * (cpu1 - cpu0) / max(out["accepted"], 1)
        out["machine_cpu_busy"] = (m1[0] - m0[0]) / max(m1[1] - m0[1], 1)
        out["dkim_signatures"], out["dkim_algorithms"] = dkim_signatures(sink_dir)
        out["upstream_connections"] = args.upstream_connections
        return out
    finally:
        stop(proc)


# ---------------------------------------------------------------- Postfix

def postconf(*settings):
    run(["postconf", "-e", *settings])


def postfix_running():
    return subprocess.run(["postfix", "status"], capture_output=True).returncode == 0


def postfix_master_pid():
    try:
        return int(Path("/var/spool/postfix/pid/master.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def setup_postfix(work, sink_port, ca, pf_port):
    """Configures the system Postfix as a relay to the sink (documented in bench/README.md)."""
    for name in ("main.cf", "master.cf"):
        src, bak = PF_CONF / name, PF_CONF / f"{name}.before-sealgate-bench"
        if src.exists() and not bak.exists():
            shutil.copy2(src, bak)
    if not (PF_CONF / "main.cf").exists():
        (PF_CONF / "main.cf").write_text("# created by sealgate bench/core.py; see bench/README.md\n")
    postconf(
        "compatibility_level=3.6",
        "myhostname=bench.localdomain", "mydomain=localdomain", "myorigin=$myhostname",
        "inet_interfaces=loopback-only", "inet_protocols=ipv4",
        "mydestination=", "local_recipient_maps=", "alias_maps=", "alias_database=",
        "mynetworks=127.0.0.0/8",
        "smtpd_relay_restrictions=permit_mynetworks, reject_unauth_destination",
        f"relayhost=[localhost]:{sink_port}",
        "smtp_tls_wrappermode=yes", "smtp_tls_security_level=secure", f"smtp_tls_CAfile={ca}",
        "smtp_tls_session_cache_database=btree:${data_directory}/smtp_scache",
        "smtp_host_lookup=native", "smtp_tls_loglevel=1",
        f"maillog_file={PF_LOG}",
    )
    # Only our listener: drop the port-25 service, add 127.0.0.1:PF_PORT, no chroot anywhere
    # (a chroot would need copies of /etc/hosts etc. under /var/spool/postfix).
    subprocess.run(["postconf", "-MX", "smtp/inet"], capture_output=True)
    for line in subprocess.run(["postconf", "-M"], capture_output=True, text=True).stdout.splitlines():
        svc = line.split()[0] if line.strip() else ""
        if svc.startswith("127.0.0.1:") and svc != f"127.0.0.1:{pf_port}":
            subprocess.run(["postconf", "-MX", f"{svc}/inet"], capture_output=True)
    run(["postconf", "-M", f"127.0.0.1:{pf_port}/inet=127.0.0.1:{pf_port} inet n - n - - smtpd"])
    run(["postconf", "-F", "*/*/chroot=n"])
    run(["postfix", "check"])


def postfix_milter(on, sock=None):
    if on:
        postconf(f"smtpd_milters=unix:{sock}", "non_smtpd_milters=$smtpd_milters",
                 "milter_default_action=tempfail", "milter_protocol=6")
    else:
        subprocess.run(["postconf", "-X", "smtpd_milters", "non_smtpd_milters", "milter_default_action",
                        "milter_protocol"], capture_output=True)


def postfix_restart():
    if postfix_running():
        run(["postfix", "stop"], capture_output=True)
        for _ in range(100):
            if not postfix_running():
                break
            time.sleep(0.1)
    run(["postfix", "start"], capture_output=True)


def postfix_queue_empty(timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = subprocess.run(["postqueue", "-j"], capture_output=True, text=True).stdout
        if not out.strip():
            return True
        time.sleep(0.5)
    return False


def pf_log_counts():
    """(verified TLS connections, status=sent) lines in the Postfix log so far."""
    v = sent = 0
    try:
        with open(PF_LOG, errors="replace") as f:
            for line in f:
                v += "Verified TLS connection established" in line
                sent += "status=sent" in line
    except OSError:
        pass
    return v, sent


def start_opendkim(work, key, selector):
    """OpenDKIM in signing mode on a unix socket (Debian's default; an inet socket on
    loopback adds ~40 ms Nagle/delayed-ACK stalls per message). Returns (process, socket)."""
    sockdir = work / "opendkim"
    sockdir.mkdir(mode=0o755, exist_ok=True)
    os.chmod(sockdir, 0o755)
    sock = sockdir / "opendkim.sock"
    sock.unlink(missing_ok=True)
    conf = work / "opendkim.conf"
    conf.write_text(f"""# written by bench/core.py
Mode s
Domain {DOMAIN}
Selector {selector}
KeyFile {key}
Socket local:{sock}
UMask 000
Canonicalization relaxed/relaxed
SignatureAlgorithm rsa-sha256
OversignHeaders From
InternalHosts 127.0.0.1
Syslog no
PidFile {work / 'opendkim.pid'}
""")
    p = start(["opendkim", "-f", "-x", conf], work / "opendkim.log")
    deadline = time.time() + 20
    while not sock.exists():
        if p.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"opendkim did not create {sock}; see {work / 'opendkim.log'}")
        time.sleep(0.05)
    return p, sock


def run_postfix(args, work, sink, pf_port, variant, fresh, dkim_keys):
    label = f"postfix-{variant}-{'fresh' if fresh else 'reuse'}"
    sink_dir = sink.fresh(label)
    opendkim = sock = None
    if variant == "dkim":
        sel, key = dkim_keys["rsa"]
        opendkim, sock = start_opendkim(work, key, sel)
    postfix_milter(variant == "dkim", sock)
    postfix_restart()
    wait_port(pf_port)
    try:
        master = postfix_master_pid()
        extra = [opendkim.pid] if opendkim else []
        sampler = Sampler(lambda: ([master] + children_of(master) + extra) if master else extra)
        sampler.start()
        m0 = machine_cpu()
        log0 = pf_log_counts()
        log(f"{label}: {args.n} messages, {args.clients} clients, {args.size} bytes")
        out = load(pf_port, args.n, args.clients, args.size, fresh, sink_dir, label, args.sink_timeout)
        m1 = machine_cpu()
        sampler.halt.set()
        sampler.join()
        pids = ([master] + children_of(master) if master else []) + extra
        out["system"] = "postfix+opendkim" if opendkim else "postfix"
        out["variant"] = variant
        out["peak_rss_mib"] = sampler.peak_pss / 1024
        out["peak_rss_how"] = ("peak of the summed PSS of the Postfix master and its children"
                               + (" and opendkim" if opendkim else "") + ", sampled every 200 ms")
        out["peak_rss_sum_mib_sampled"] = sampler.peak_rss / 1024
        out["vmhwm_sum_at_end_mib"] = sum(proc_status(p, "VmHWM") or 0 for p in pids) / 1024
        out["peak_processes"] = sampler.peak_procs
        out["machine_cpu_busy"] = (m1[0] - m0[0]) / max(m1[1] - m0[1], 1)
        out["dkim_signatures"], out["dkim_algorithms"] = dkim_signatures(sink_dir)
        if not postfix_queue_empty(5):
            log(f"  warning: the Postfix queue is not empty after {label}")
        time.sleep(0.5)  # postlogd writes asynchronously
        log1 = pf_log_counts()
        out["postfix_verified_tls_connections"] = log1[0] - log0[0]
        out["postfix_status_sent"] = log1[1] - log0[1]
        return out
    finally:
        if opendkim:
            stop(opendkim)
            postfix_milter(False)


# ---------------------------------------------------------------- report

def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def table(results, fsync, targets):
    lines = []
    hdr = f"{'run':<32} {'msgs/s':>8} {'accept/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'RSS MiB':>8} {'CPU':>5} {'sig':>4} {'load':>5}"
    lines.append(hdr)
    lines.append("-" * len(hdr))
    for r in results:
        name = f"{r['system']} {r['variant']} {'fresh' if r['fresh_connections'] else 'reuse'}"
        lines.append(f"{name:<32} {fmt(r['msgs_per_s'], '8.0f')} {r['accept_msgs_per_s']:9.0f} "
                     f"{r['latency_ms']['p50']:8.2f} {r['latency_ms']['p99']:8.2f} {r['peak_rss_mib']:8.1f} "
                     f"{100 * r['machine_cpu_busy']:4.0f}% {r['dkim_signatures']:>4} {r['loadavg_1m_before']:5.1f}")
    lines.append("CPU = whole-machine busy share during the run; load = 1-minute load average before it "
                 "(2 cores: above ~3 means other work competed)")
    lines.append("")
    lines.append(f"disk: {fsync['durable_writes_per_s']:.0f} durable writes/s (4 KiB write + fsync + dir fsync, "
                 f"8 writers) = {fsync['fsync_calls_per_s']:.0f} fsync()/s")
    for t in targets:
        lines.append(t["text"])
    return "\n".join(lines)


def targets_for(results, fsync):
    out = []
    by = {(r["system"].split("+")[0], r["variant"], r["fresh_connections"]): r for r in results}
    for (system, variant, fresh), sg in sorted(by.items(), key=lambda kv: (kv[0][1], kv[0][2])):
        if system != "sealgate":
            continue
        pf = by.get(("postfix", variant, fresh))
        mode = "fresh" if fresh else "reuse"
        t = {"variant": variant, "mode": mode}
        want = TARGET_RATIO_DKIM if variant == "dkim" else TARGET_RATIO
        if pf and sg["msgs_per_s"] and pf["msgs_per_s"]:
            t["ratio"] = sg["msgs_per_s"] / pf["msgs_per_s"]
            t["ratio_ok"] = t["ratio"] >= want
        t["p99_ms"] = sg["latency_ms"]["p99"]
        t["p99_ok"] = t["p99_ms"] < TARGET_P99_MS
        t["rss_mib"] = sg["peak_rss_mib"]
        t["rss_ok"] = t["rss_mib"] < TARGET_RSS_MIB
        t["fsync_fraction"] = (sg["msgs_per_s"] or 0) / fsync["durable_writes_per_s"]
        ok = lambda b: "ok" if b else "MISS"
        ratio = (f"ratio sealgate/Postfix {t['ratio']:.2f}x (target >= {want:.0f}x: {ok(t['ratio_ok'])})"
                 if "ratio" in t else "ratio -")
        t["text"] = (f"{variant}/{mode}: {ratio}; p99 {t['p99_ms']:.1f} ms (< {TARGET_P99_MS:.0f}: {ok(t['p99_ok'])}); "
                     f"RSS {t['rss_mib']:.1f} MiB (< {TARGET_RSS_MIB:.0f}: {ok(t['rss_ok'])}); "
                     f"sealgate = {100 * t['fsync_fraction']:.0f}% of the disk's durable writes/s")
        out.append(t)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=4000, help="messages per run (default 4000)")
    ap.add_argument("-c", "--clients", type=int, default=8, help="concurrent clients (default 8)")
    ap.add_argument("--size", type=int, default=4096, help="message size in bytes (default 4096)")
    ap.add_argument("--fresh-connections", action="store_true",
                    help="one SMTP connection per message instead of one per client")
    ap.add_argument("--both-modes", action="store_true", help="run reused and fresh connections")
    ap.add_argument("--dkim", action="store_true",
                    help="also run the DKIM variant: sealgate RSA+Ed25519 vs Postfix+OpenDKIM (RSA)")
    ap.add_argument("--dkim-only", action="store_true", help="only the DKIM variant")
    ap.add_argument("--skip-postfix", action="store_true")
    ap.add_argument("--skip-sealgate", action="store_true")
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument("--upstream-connections", type=int, default=4,
                    help="sealgate [upstream] connections (default 4, the product default)")
    ap.add_argument("--perf", type=Path, metavar="DIR",
                    help="record `perf record -g` of sealgate during each sealgate run into DIR")
    ap.add_argument("--fsync-seconds", type=float, default=4.0)
    ap.add_argument("--sink-timeout", type=int, default=300)
    ap.add_argument("--rust-log", default="warn", help="RUST_LOG for sealgate serve unless set (default warn)")
    ap.add_argument("--workdir", type=Path, default=Path("/var/lib/sealgate-bench"))
    ap.add_argument("--json-out", type=Path, help="default bench/results-<date>.json")
    args = ap.parse_args()

    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    build(args.skip_build)
    variants = ["dkim"] if args.dkim_only else (["plain", "dkim"] if args.dkim else ["plain"])
    modes = [False, True] if args.both_modes else [args.fresh_connections]
    if not args.skip_postfix and os.geteuid() != 0:
        sys.exit("the Postfix half needs root (postconf -e, postfix start); use --skip-postfix otherwise")

    fsync = fsync_probe(work, args.fsync_seconds)
    log(f"fsync probe: {fsync['durable_writes_per_s']:.0f} durable writes/s")
    ca, crt, key = make_certs(work / "certs")
    dkim_keys = make_dkim_keys(work / "dkim") if "dkim" in variants else {}
    sink = Sink(work, free_port(), crt, key, "capture")
    pf_port = free_port()
    results = []
    pf_started_here = False
    try:
        if not args.skip_postfix:
            PF_LOG.unlink(missing_ok=True)
            setup_postfix(work, sink.port, ca, pf_port)
            pf_started_here = not postfix_running()
        for variant in variants:
            for fresh in modes:
                if not args.skip_sealgate:
                    results.append(run_sealgate(args, work, sink, ca, variant, fresh, dkim_keys))
                if not args.skip_postfix:
                    results.append(run_postfix(args, work, sink, pf_port, variant, fresh, dkim_keys))
    finally:
        if sink.proc:
            stop(sink.proc)
        if not args.skip_postfix and pf_started_here:
            subprocess.run(["postfix", "stop"], capture_output=True)
        cleanup()

    targets = targets_for(results, fsync)
    print(table(results, fsync, targets))
    when = datetime.datetime.now()
    out = args.json_out or (REPO / "bench" / f"results-{when.strftime('%Y%m%d-%H%M%S')}.json")
    out.write_text(json.dumps({
        "date": when.isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release()},
        "postfix_version": subprocess.run(["postconf", "-h", "mail_version"], capture_output=True,
                                          text=True).stdout.strip() or None,
        "params": {"n": args.n, "clients": args.clients, "size": args.size,
                   "upstream_connections": args.upstream_connections, "sink": "sealgate capture --implicit"},
        "fsync": fsync,
        "results": results,
        "targets": targets,
    }, indent=2) + "\n")
    print(f"\nresults written to {out}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        cleanup()
        sys.exit(130)
