#!/usr/bin/python3
"""A Kubernetes API server simulator for sluice's tests: the subset the executor uses.

    sim.py --state-dir DIR [--port N] [--port-file F] [--schema api__v1_openapi.json]
           [--claim NAME=HOSTDIR]... [--node JSON]... [--token T]
           [--tls-cert F --tls-key F [--client-ca F]] [--bookmark-seconds S]
           [--history N]

An independent implementation (it shares no code with the C client) that speaks the real
wire format over HTTP/1.1 (optionally TLS): JSON bodies, metav1.Status objects for errors,
chunked watch streams of {"type","object"} lines with resourceVersion and BOOKMARK events,
and pods/log with follow, timestamps, sinceTime, sinceSeconds, tailLines and limitBytes.

Each pod's containers run as local processes (init containers first, in order), with the
pod's env, $(VAR) expansion of command and args as the kubelet does it, and a tiny
scheduler over the nodes given with --node (labels, taints, GPUs). The one deviation from
a real cluster is the filesystem: a process cannot get the image's filesystem, so every
volume mountPath and every container's terminationMessagePath is backed by a host
directory or file (README.md, "Paths"), and strings in command, args, env values and
workingDir that are such a path or lie under one are rewritten to the host path.

Control endpoints, under /_sim/ (no real API uses that path):
    POST /_sim/faults       request-level faults (status codes, dropped connections,
                            cut streams, 410 in watches), each for `count` requests
    POST /_sim/behaviours   per-pod behaviours for pods whose labels match a selector
                            (unschedulable, pending, image_pull_backoff, oom, kill,
                            evict, node_lost, delete)
    POST /_sim/secrets      a Secret's data (plain strings) for secretKeyRef
    POST /_sim/compact      forget the watch history: older resourceVersions get 410
    POST /_sim/drop_streams cut every open watch and log stream now
    GET  /_sim/stats        request counters, pods created, peak live pods
    POST /_sim/reset        clear faults, behaviours and counters
    GET  /_sim/pods         every pod with its host directories and process ids
"""
import argparse
import base64
import collections
import copy
import datetime
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TERMINATION_LOG_MAX = 4096
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
           409: "AlreadyExists", 410: "Expired", 422: "Invalid", 429: "TooManyRequests",
           500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}
MESSAGES = {429: "Too many requests, please try again later.",
            500: "Internal error occurred: etcdserver: leader changed",
            503: "the server is currently unable to handle the request",
            504: "the server was unable to return a response in the time allotted"}


def now_rfc3339():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def ts_nano(ns):
    secs, frac = divmod(ns, 1_000_000_000)
    base = datetime.datetime.fromtimestamp(secs, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return "%s.%09dZ" % (base, frac)


def parse_time(s):
    """RFC 3339 (seconds precision, as the API's metav1.Time) to unix nanoseconds."""
    s = s.strip()
    m = re.match(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})$", s)
    if not m:
        raise ValueError("invalid time %r" % s)
    tz = m.group(3)
    dt = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")
    if tz == "Z":
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    else:
        sign = 1 if tz[0] == "+" else -1
        dt = dt.replace(tzinfo=datetime.timezone(sign * datetime.timedelta(
            hours=int(tz[1:3]), minutes=int(tz[4:6]))))
    ns = int(dt.timestamp()) * 1_000_000_000
    if m.group(2):
        ns += int((m.group(2)[1:] + "000000000")[:9])
    return ns


def kill_container(pid, sig):
    """Signals a container's processes. SIGKILL reaches every process of its session (the
    simulator's stand-in for the container's cgroup: a real runtime kills them all);
    other signals go to the first process's group only, as a runtime signals PID 1."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    if sig != signal.SIGKILL:
        return
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[3]) == pid:  # the session id
                os.kill(int(entry), signal.SIGKILL)
        except (OSError, IndexError, ValueError):
            pass


def status_body(code, message, reason=None, details=None):
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason or REASONS.get(code, "Unknown"), "code": code}
    if details:
        body["details"] = details
    return body


# --- label selectors -----------------------------------------------------------------------

def parse_selector(text):
    """Kubernetes label selector syntax into a list of (key, op, values)."""
    reqs = []
    text = (text or "").strip()
    if not text:
        return reqs
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    for p in parts:
        p = p.strip()
        m = re.match(r"^([^\s!=]+)\s+(in|notin)\s+\((.*)\)$", p)
        if m:
            reqs.append((m.group(1), m.group(2), [v.strip() for v in m.group(3).split(",")]))
        elif "!=" in p:
            k, v = p.split("!=", 1)
            reqs.append((k.strip(), "!=", [v.strip()]))
        elif "==" in p:
            k, v = p.split("==", 1)
            reqs.append((k.strip(), "=", [v.strip()]))
        elif "=" in p:
            k, v = p.split("=", 1)
            reqs.append((k.strip(), "=", [v.strip()]))
        elif p.startswith("!"):
            reqs.append((p[1:].strip(), "!", []))
        elif re.match(r"^[A-Za-z0-9./_-]+$", p):
            reqs.append((p, "exists", []))
        else:
            raise ValueError("unable to parse requirement: %r" % p)
    return reqs


def selector_matches(reqs, labels):
    labels = labels or {}
    for key, op, values in reqs:
        if op == "=" and labels.get(key) != values[0]:
            return False
        if op == "!=" and labels.get(key) == values[0]:
            return False
        if op == "in" and labels.get(key) not in values:
            return False
        if op == "notin" and labels.get(key) in values:
            return False
        if op == "exists" and key not in labels:
            return False
        if op == "!" and key in labels:
            return False
    return True


# --- the kubelet's $(VAR) rule ----------------------------------------------------------------

def expand(s, env):
    """$(NAME) -> env[NAME] if defined, else kept; $$ -> $ (k8s.io/kubernetes third_party
    forked/golang/expansion, reimplemented)."""
    out, i, n = [], 0, len(s)
    while i < n:
        c = s[i]
        if c == "$" and i + 1 < n:
            nxt = s[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                j = s.find(")", i + 2)
                if j >= 0:
                    name = s[i + 2:j]
                    if name in env:
                        out.append(env[name])
                    else:
                        out.append(s[i:j + 1])
                    i = j + 1
                    continue
        out.append(c)
        i += 1
    return "".join(out)


def parse_quantity(q):
    if isinstance(q, (int, float)):
        return float(q)
    m = re.match(r"^([+-]?[0-9.]+)([a-zA-Z]*)$", str(q))
    if not m:
        return 0.0
    mult = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 1024, "Mi": 1024**2,
            "Gi": 1024**3, "Ti": 1024**4}.get(m.group(2), 1)
    return float(m.group(1)) * mult


# --- state -------------------------------------------------------------------------------------

class Container:
    def __init__(self, spec, init):
        self.spec = spec
        self.name = spec["name"]
        self.init = init
        self.entries = []          # [(ts_ns, bytes)], the log, line by line
        self.last_ts = 0
        self.state = "waiting"     # waiting | running | terminated
        self.waiting_reason = "ContainerCreating" if not init else "PodInitializing"
        self.waiting_message = None
        self.started_at = None
        self.finished_at = None
        self.exit_code = None
        self.reason = None
        self.message = None
        self.proc = None
        self.term_path = None      # host file of terminationMessagePath
        self.oom_killed = False    # the kernel killed it for its memory limit

    def log_line(self, data):
        ts = max(time.time_ns(), self.last_ts + 1)
        self.last_ts = ts
        self.entries.append((ts, data))

    def status(self):
        st = {"name": self.name, "image": self.spec.get("image", ""), "imageID": "",
              "ready": self.state == "running", "restartCount": 0,
              "started": self.state == "running"}
        if self.state == "waiting":
            w = {"reason": self.waiting_reason}
            if self.waiting_message:
                w["message"] = self.waiting_message
            st["state"] = {"waiting": w}
        elif self.state == "running":
            st["state"] = {"running": {"startedAt": self.started_at}}
            st["containerID"] = "sim://%s" % id(self)
        else:
            t = {"exitCode": self.exit_code, "reason": self.reason,
                 "startedAt": self.started_at or self.finished_at, "finishedAt": self.finished_at}
            if self.message:
                t["message"] = self.message
            st["state"] = {"terminated": t}
            st["containerID"] = "sim://%s" % id(self)
        return st


class Pod:
    def __init__(self, obj, pod_dir):
        self.obj = obj
        self.dir = pod_dir
        self.name = obj["metadata"]["name"]
        self.ns = obj["metadata"]["namespace"]
        self.init = [Container(c, True) for c in obj["spec"].get("initContainers", [])]
        self.main = [Container(c, False) for c in obj["spec"]["containers"]]
        self.phase = "Pending"
        self.reason = None
        self.message = None
        self.conditions = {}
        self.node = None
        self.start_time = None
        self.deleting = False
        self.behaviour = None
        self.kill_reason = None    # why the pod's processes were killed: evict, node_lost, deadline, delete
        self.gpus = 0
        self.lock_cond = None      # the server's condition

    def containers(self):
        return self.init + self.main

    def container(self, name):
        for c in self.containers():
            if c.name == name:
                return c
        return None

    def terminal(self):
        return self.phase in ("Succeeded", "Failed")


class Sim:
    def __init__(self, args):
        self.args = args
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.rv = 1000
        self.pods = {}                # (ns, name) -> Pod
        self.history = collections.deque(maxlen=args.history)   # (rv, type, obj)
        self.compacted_rv = self.rv   # watches from before this get 410
        self.faults = []
        self.behaviours = []
        self.secrets = {}             # (ns, name) -> {key: value}
        self.stats = collections.Counter()
        self.live_peak = 0
        self.stream_epoch = 0         # bumped by /_sim/drop_streams
        self.claims = dict(c.split("=", 1) for c in args.claim)
        self.nodes = [json.loads(n) for n in args.node] or [{"name": "sim-node-1"}]
        for n in self.nodes:
            n.setdefault("labels", {})
            n.setdefault("taints", [])
            n.setdefault("gpus", 0)
            n["gpus_used"] = 0
            n["labels"].setdefault("kubernetes.io/hostname", n["name"])
        self.fixtures = {}
        if args.fixtures:
            with open(args.fixtures, encoding="utf-8") as f:
                fx = json.load(f)
            for e in fx.get("http_errors", []):
                self.fixtures[e["name"]] = e
            for e in fx.get("watch_stream_events", []):
                self.fixtures[e["name"]] = e
        self.validator = None
        if args.schema:
            sys.dont_write_bytecode = True  # no __pycache__ in the source tree
            sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
            import schema_check
            with open(args.schema, encoding="utf-8") as f:
                self.validator = schema_check.Validator(json.load(f))
        os.makedirs(os.path.join(args.state_dir, "pods"), exist_ok=True)

    # --- objects and events ------------------------------------------------------------

    def render(self, pod):
        o = copy.deepcopy(pod.obj)
        st = {"phase": pod.phase, "conditions": list(pod.conditions.values()), "qosClass": "Burstable"}
        if pod.reason:
            st["reason"] = pod.reason
        if pod.message:
            st["message"] = pod.message
        if pod.start_time:
            st["startTime"] = pod.start_time
        if pod.node:
            st["hostIP"] = "10.0.0.1"
            st["podIP"] = "10.1.0.%d" % (abs(hash(pod.name)) % 250 + 2)
        if pod.init:
            st["initContainerStatuses"] = [c.status() for c in pod.init]
        st["containerStatuses"] = [c.status() for c in pod.main]
        o["status"] = st
        return o

    def bump(self, pod, etype="MODIFIED"):
        """Records a change of pod (lock held): new resourceVersion, one event."""
        self.rv += 1
        pod.obj["metadata"]["resourceVersion"] = str(self.rv)
        obj = self.render(pod)
        self.history.append((self.rv, etype, obj))
        self.cond.notify_all()
        return obj

    def set_condition(self, pod, ctype, status, reason=None, message=None):
        c = {"type": ctype, "status": status, "lastProbeTime": None,
             "lastTransitionTime": now_rfc3339()}
        if reason:
            c["reason"] = reason
        if message:
            c["message"] = message
        pod.conditions[ctype] = c

    # --- faults ------------------------------------------------------------------------

    def take_fault(self, method, path, query):
        with self.lock:
            for f in self.faults:
                m = f.get("match", {})
                if m.get("method") and m["method"] != method:
                    continue
                if m.get("path") and not re.search(m["path"], path):
                    continue
                if "watch" in m and bool(m["watch"]) != (query.get("watch") in ("1", "true")):
                    continue
                if f.get("count", 1) <= 0:
                    continue
                f["count"] = f.get("count", 1) - 1
                f["hits"] = f.get("hits", 0) + 1
                return dict(f)
        return None

    def behaviour_for(self, labels):
        for b in self.behaviours:
            if b.get("count", 1) <= 0:
                continue
            if selector_matches(parse_selector(b.get("selector", "")), labels):
                b["count"] = b.get("count", 1) - 1
                return dict(b)
        return None

    # --- scheduling --------------------------------------------------------------------

    def fits(self, pod, node):
        spec = pod.obj["spec"]
        for k, v in (spec.get("nodeSelector") or {}).items():
            if node["labels"].get(k) != v:
                return "node(s) didn't match Pod's node affinity/selector"
        for t in node["taints"]:
            if t.get("effect") not in ("NoSchedule", "NoExecute"):
                continue
            ok = False
            for tol in spec.get("tolerations") or []:
                if tol.get("key") not in (None, "", t.get("key")):
                    continue
                if tol.get("effect") not in (None, "", t.get("effect")):
                    continue
                if tol.get("operator", "Equal") == "Exists" or tol.get("value", "") == t.get("value", ""):
                    ok = True
                    break
            if not ok:
                return "node(s) had untolerated taint {%s: %s}" % (t.get("key"), t.get("value", ""))
        if pod.gpus > node["gpus"] - node["gpus_used"]:
            return "Insufficient nvidia.com/gpu"
        return None

    def try_schedule(self, pod):
        """Binds pod to a node (lock held); True if it fits somewhere."""
        reasons = collections.Counter()
        for node in self.nodes:
            why = self.fits(pod, node)
            if why is None:
                node["gpus_used"] += pod.gpus
                pod.node = node["name"]
                pod.obj["spec"]["nodeName"] = node["name"]
                self.set_condition(pod, "PodScheduled", "True")
                return True
            reasons[why] += 1
        msg = "0/%d nodes are available: %s. preemption: 0/%d nodes are available: %d Preemption is not helpful for scheduling." % (
            len(self.nodes), ", ".join("%d %s" % (n, r) for r, n in sorted(reasons.items())),
            len(self.nodes), len(self.nodes))
        self.set_condition(pod, "PodScheduled", "False", "Unschedulable", msg)
        return False

    def release_node(self, pod):
        for node in self.nodes:
            if node["name"] == pod.node and pod.gpus:
                node["gpus_used"] -= pod.gpus
                pod.gpus = 0
                self.cond.notify_all()

    # --- pod lifecycle -----------------------------------------------------------------

    def create(self, ns, obj):
        meta = obj.setdefault("metadata", {})
        name = meta.get("name")
        if not name:
            return 422, status_body(422, "Pod \"\" is invalid: metadata.name: Required value: name or generateName is required", "Invalid")
        if self.validator:
            errors = []
            self.validator.check(obj, {"$ref": "#/components/schemas/io.k8s.api.core.v1.Pod"}, "", errors)
            if errors:
                causes = [{"reason": "FieldValueInvalid", "message": m, "field": p.lstrip(".")} for p, m in errors]
                return 422, status_body(422, "Pod \"%s\" is invalid: %s" % (name, "; ".join(
                    "%s: %s" % (p.lstrip("."), m) for p, m in errors)), "Invalid",
                    {"name": name, "kind": "pods", "causes": causes})
        if not re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", name) or len(name) > 63:
            return 422, status_body(422, "Pod \"%s\" is invalid: metadata.name: Invalid value: \"%s\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'" % (name, name), "Invalid")
        with self.lock:
            if (ns, name) in self.pods:
                return 409, status_body(409, "pods \"%s\" already exists" % name, "AlreadyExists",
                                        {"name": name, "kind": "pods"})
            meta["namespace"] = ns
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_rfc3339()
            meta.pop("resourceVersion", None)
            obj.pop("status", None)
            pod_dir = os.path.join(self.args.state_dir, "pods", meta["uid"])
            os.makedirs(pod_dir)
            pod = Pod(obj, pod_dir)
            for c in pod.main:
                lim = (c.spec.get("resources") or {}).get("limits") or {}
                pod.gpus += int(parse_quantity(lim.get("nvidia.com/gpu", 0)))
            pod.behaviour = self.behaviour_for(meta.get("labels"))
            self.pods[(ns, name)] = pod
            self.stats["pods_created"] += 1
            self.live_peak = max(self.live_peak, sum(1 for p in self.pods.values() if not p.terminal()))
            out = self.bump(pod, "ADDED")
        t = threading.Thread(target=self.run_pod, args=(pod,), daemon=True)
        t.start()
        return 201, out

    def wait_until(self, pod, seconds):
        """Sleeps up to seconds, waking early if the pod is being deleted (lock held)."""
        end = time.monotonic() + seconds
        while not pod.deleting:
            left = end - time.monotonic()
            if left <= 0:
                return True
            self.cond.wait(left)
        return False

    def run_pod(self, pod):
        try:
            self._run_pod(pod)
        except Exception:
            traceback.print_exc()

    def _run_pod(self, pod):
        b = pod.behaviour or {}
        kind = b.get("behaviour")
        with self.lock:
            # the scheduler
            if kind == "pending":
                while not pod.deleting:
                    self.cond.wait(1)
                return self.finish_delete(pod)
            if kind == "unschedulable":
                self.set_condition(pod, "PodScheduled", "False", "Unschedulable", b.get(
                    "message", "0/%d nodes are available: %d Insufficient nvidia.com/gpu." % (
                        len(self.nodes), len(self.nodes))))
                self.bump(pod)
                while not pod.deleting:
                    self.cond.wait(1)
                return self.finish_delete(pod)
            announced = False
            while not self.try_schedule(pod):
                if not announced:
                    self.bump(pod)
                    announced = True
                if pod.deleting:
                    return self.finish_delete(pod)
                self.cond.wait(1)
            pod.start_time = now_rfc3339()
            pod.started_mono = time.monotonic()
            self.set_condition(pod, "Initialized", "False" if pod.init else "True")
            self.set_condition(pod, "Ready", "False")
            self.set_condition(pod, "ContainersReady", "False")
            self.bump(pod)
            missing = self.missing_secret(pod)
            if missing:
                for c in pod.main:
                    c.waiting_reason = "CreateContainerConfigError"
                    c.waiting_message = missing
                self.bump(pod)
                while not pod.deleting:
                    self.cond.wait(1)
                return self.finish_delete(pod)
            if kind == "image_pull_backoff":
                image = pod.main[0].spec.get("image", "")
                flip = False
                while not pod.deleting:
                    for c in pod.init or pod.main:
                        c.waiting_reason = "ImagePullBackOff" if flip else "ErrImagePull"
                        c.waiting_message = ('Back-off pulling image "%s"' % image if flip else
                                             'failed to pull and unpack image "%s": not found' % image)
                    flip = not flip
                    self.bump(pod)
                    self.cond.wait(b.get("period", 0.5))
                return self.finish_delete(pod)
        # init containers, in order
        for c in pod.init:
            code = self.run_container(pod, c)
            with self.lock:
                if pod.deleting or code != 0:
                    return self.end_pod(pod)
        with self.lock:
            if pod.init:
                self.set_condition(pod, "Initialized", "True")
        # main containers (each in a thread of its own but the first)
        threads = [threading.Thread(target=self.run_container, args=(pod, c), daemon=True)
                   for c in pod.main[1:]]
        for t in threads:
            t.start()
        if kind in ("oom", "kill", "evict", "node_lost", "delete"):
            threading.Thread(target=self.misbehave, args=(pod, b), daemon=True).start()
        self.run_container(pod, pod.main[0])
        for t in threads:
            t.join()
        self.end_pod(pod)

    def missing_secret(self, pod):
        for c in pod.containers():
            for e in c.spec.get("env") or []:
                ref = ((e.get("valueFrom") or {}).get("secretKeyRef"))
                if not ref:
                    continue
                data = self.secrets.get((pod.ns, ref.get("name")))
                if data is None and not ref.get("optional"):
                    return 'secret "%s" not found' % ref.get("name")
                if data is not None and ref.get("key") not in data and not ref.get("optional"):
                    return "couldn't find key %s in Secret %s/%s" % (ref.get("key"), pod.ns, ref.get("name"))
        return None

    def misbehave(self, pod, b):
        """oom and kill end one container (`container`, default the first), as the kernel
        or a crash would: the pod's other containers go on. evict, node_lost and delete end
        the pod: its status says so first (as the kubelet and the API server do), then
        every process is killed."""
        kind = b["behaviour"]
        with self.lock:
            if not self.wait_until(pod, b.get("after_seconds", 0.3)):
                return
            if pod.terminal():
                return
            if kind in ("oom", "kill"):
                c = pod.container(b.get("container") or pod.main[0].name)
                if c is None or not c.proc or c.state != "running":
                    return
                c.oom_killed = kind == "oom"
                procs = [c.proc]
                sig = signal.SIGKILL if kind == "oom" else b.get("signal", signal.SIGKILL)
            else:
                if kind == "delete":
                    pod.deleting = True
                    pod.kill_reason = "delete"
                    pod.obj["metadata"]["deletionTimestamp"] = now_rfc3339()
                    pod.obj["metadata"]["deletionGracePeriodSeconds"] = 0
                else:
                    pod.kill_reason = kind
                    self.set_failed(pod, kind)
                self.bump(pod)
                self.cond.notify_all()
                procs = [c.proc for c in pod.containers() if c.proc and c.state == "running"]
                sig = signal.SIGKILL
        for p in procs:
            if sig == signal.SIGKILL:
                kill_container(p.pid, sig)
            else:  # a signal to the container's main process only
                try:
                    os.kill(p.pid, sig)
                except ProcessLookupError:
                    pass

    def set_failed(self, pod, kind):
        """The pod-level failure of kind (evict, node_lost, deadline) in its status (lock
        held)."""
        if kind == "evict":
            pod.phase, pod.reason = "Failed", "Evicted"
            pod.message = "The node was low on resource: memory. Threshold quantity: 100Mi, available: 42Mi. Container %s was using 1Gi, request is 0, has larger consumption of memory." % pod.main[0].name
            self.set_condition(pod, "DisruptionTarget", "True", "TerminationByKubelet",
                               "The node was low on resource: memory.")
        elif kind == "node_lost":
            pod.phase, pod.reason = "Failed", "NodeLost"
            pod.message = "Node %s which was running pod %s is unresponsive" % (pod.node, pod.name)
            self.set_condition(pod, "DisruptionTarget", "True", "DeletionByTaintManager",
                               "Taint manager: deleting due to NoExecute taint")
        elif kind == "deadline":
            pod.phase, pod.reason = "Failed", "DeadlineExceeded"
            pod.message = "Pod was active on the node longer than the specified deadline"

    def volume_map(self, pod, c):
        """[(container path, host path)] for c, longest container path first."""
        vols = {}
        for v in pod.obj["spec"].get("volumes") or []:
            name = v["name"]
            if "persistentVolumeClaim" in v:
                claim = v["persistentVolumeClaim"].get("claimName")
                if claim not in self.claims:
                    raise RuntimeError('persistentvolumeclaim "%s" not found' % claim)
                vols[name] = self.claims[claim]
            elif "hostPath" in v:
                vols[name] = v["hostPath"]["path"]
            elif "secret" in v:
                # the kubelet's rules: every key as a file, or only the listed items at their
                # paths; a missing Secret or key fails the mount unless the volume is optional
                d = os.path.join(pod.dir, "volumes", name)
                os.makedirs(d, exist_ok=True)
                sv = v["secret"]
                data = self.secrets.get((pod.ns, sv.get("secretName")))
                if data is None and not sv.get("optional"):
                    raise RuntimeError('secret "%s" not found' % sv.get("secretName"))
                data = data or {}
                items = sv.get("items")
                pairs = [(i["key"], i["path"]) for i in items] if items else [(k, k) for k in data]
                for key, path in pairs:
                    if key not in data:
                        if not sv.get("optional"):
                            raise RuntimeError("couldn't find key %s in Secret %s/%s" % (
                                key, pod.ns, sv.get("secretName")))
                        continue
                    with open(os.path.join(d, path), "w") as f:
                        f.write(data[key])
                vols[name] = d
            else:  # emptyDir and anything else: a directory of the pod's own
                d = os.path.join(pod.dir, "volumes", name)
                os.makedirs(d, exist_ok=True)
                vols[name] = d
        mapping = []
        for m in c.spec.get("volumeMounts") or []:
            host = vols.get(m["name"])
            if host is None:
                raise RuntimeError('volume "%s" not found' % m["name"])
            if m.get("subPath"):
                host = os.path.join(host, m["subPath"])
                os.makedirs(host, exist_ok=True)
            mapping.append((m["mountPath"].rstrip("/") or "/", host))
        c.term_path = os.path.join(pod.dir, "%s.termination-log" % c.name)
        open(c.term_path, "w").close()
        mapping.append((c.spec.get("terminationMessagePath", "/dev/termination-log"), c.term_path))
        mapping.sort(key=lambda e: -len(e[0]))
        return mapping

    @staticmethod
    def rewrite(s, mapping):
        for cpath, host in mapping:
            if s == cpath:
                return host
            if s.startswith(cpath + "/"):
                return host + s[len(cpath):]
        return s

    def container_env(self, pod, c, mapping):
        env = {"PATH": DEFAULT_PATH, "HOSTNAME": pod.name, "HOME": os.path.join(pod.dir, "home"),
               "KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(self.port)}
        os.makedirs(env["HOME"], exist_ok=True)
        defined = {}
        for e in c.spec.get("env") or []:
            if "value" in e:
                val = expand(e.get("value", ""), defined)
            elif "valueFrom" in e and "secretKeyRef" in e["valueFrom"]:
                ref = e["valueFrom"]["secretKeyRef"]
                val = (self.secrets.get((pod.ns, ref["name"])) or {}).get(ref["key"], "")
            elif "valueFrom" in e and "fieldRef" in e["valueFrom"]:
                fp = e["valueFrom"]["fieldRef"].get("fieldPath")
                val = {"metadata.name": pod.name, "metadata.namespace": pod.ns,
                       "spec.nodeName": pod.node or ""}.get(fp, "")
            else:
                val = ""
            defined[e["name"]] = val
        for k, v in defined.items():
            env[k] = self.rewrite(v, mapping)
        return env, defined

    def run_container(self, pod, c):
        with self.lock:
            if pod.deleting:
                return -1
            try:
                mapping = self.volume_map(pod, c)
            except RuntimeError as e:
                c.state = "terminated"
                c.exit_code, c.reason, c.message = 128, "StartError", str(e)
                c.finished_at = now_rfc3339()
                self.bump(pod)
                return 128
            env, defined = self.container_env(pod, c, mapping)
            argv = [self.rewrite(expand(a, defined), mapping)
                    for a in (c.spec.get("command") or []) + (c.spec.get("args") or [])]
            cwd = c.spec.get("workingDir")
            cwd = self.rewrite(cwd, mapping) if cwd else os.path.join(pod.dir, "root")
            try:
                os.makedirs(cwd, exist_ok=True)  # container runtimes create workingDir
                if not argv:
                    raise FileNotFoundError("no command: the simulator has no image entrypoints")
                c.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          start_new_session=True, close_fds=True)
            except OSError as e:
                c.state = "terminated"
                c.exit_code, c.reason = 128, "StartError"
                c.message = ('failed to create containerd task: exec: "%s": %s' % (
                    argv[0] if argv else "", e.strerror or str(e)))
                c.started_at = c.finished_at = now_rfc3339()
                self.bump(pod)
                return 128
            c.state = "running"
            c.started_at = now_rfc3339()
            if not c.init:
                # Running once a container runs; Ready once all of them do
                if pod.phase == "Pending":
                    pod.phase = "Running"
                if all(x.state == "running" for x in pod.main):
                    self.set_condition(pod, "Ready", "True")
                    self.set_condition(pod, "ContainersReady", "True")
            self.bump(pod)
        # capture: one line at a time, timestamped when read
        partial = b""
        fd = c.proc.stdout.fileno()
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data = partial + chunk
            lines = data.split(b"\n")
            partial = lines.pop()
            if lines:
                with self.lock:
                    for line in lines:
                        c.log_line(line + b"\n")
                    self.cond.notify_all()
        code = c.proc.wait()
        c.proc.stdout.close()
        with self.lock:
            if partial:
                c.log_line(partial)
            c.state = "terminated"
            c.finished_at = now_rfc3339()
            c.exit_code = code if code >= 0 else 128 - code
            if c.oom_killed:
                c.exit_code, c.reason = 137, "OOMKilled"
            else:
                c.reason = "Completed" if c.exit_code == 0 else "Error"
            try:
                with open(c.term_path, "rb") as f:
                    msg = f.read(TERMINATION_LOG_MAX).decode("utf-8", "replace")
            except OSError:
                msg = ""
            if not msg and c.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError" and c.exit_code:
                msg = b"".join(d for _, d in c.entries[-80:])[-2048:].decode("utf-8", "replace")
            c.message = msg or None
            if not c.init and any(x.state != "terminated" for x in pod.main):
                # the kubelet reports a container's end when it happens; the pod's phase
                # ends only with the last container (end_pod)
                self.bump(pod)
            self.cond.notify_all()
            return c.exit_code

    def end_pod(self, pod):
        with self.lock:
            for c in pod.containers():
                if c.state == "waiting":
                    c.state = "terminated"
                    c.exit_code, c.reason = 137 if pod.deleting else 0, "ContainerStatusUnknown"
                    c.finished_at = now_rfc3339()
            failed = any(c.exit_code for c in pod.containers() if c.state == "terminated")
            kr = pod.kill_reason
            if kr in ("evict", "node_lost", "deadline"):
                self.set_failed(pod, kr)
            else:
                # the phase ends only now that every container has: Failed if any failed
                pod.phase = "Failed" if failed else "Succeeded"
            self.set_condition(pod, "Ready", "False", "PodCompleted")
            self.set_condition(pod, "ContainersReady", "False", "PodCompleted")
            self.release_node(pod)
            self.bump(pod)
            if kr == "node_lost" and not pod.deleting:
                # the taint manager deletes pods of a lost node
                pod.deleting = True
                pod.obj["metadata"]["deletionTimestamp"] = now_rfc3339()
                self.bump(pod)
            if pod.deleting:
                self.finish_delete(pod)

    def finish_delete(self, pod):
        """Removes a pod being deleted whose processes ended (lock held)."""
        key = (pod.ns, pod.name)
        if self.pods.get(key) is not pod:
            return
        self.release_node(pod)
        del self.pods[key]
        self.bump(pod, "DELETED")
        shutil.rmtree(pod.dir, ignore_errors=True)

    def deadline_loop(self):
        """The kubelet's activeDeadlineSeconds enforcement."""
        while True:
            time.sleep(0.1)
            kill = []
            with self.lock:
                for pod in self.pods.values():
                    ads = pod.obj["spec"].get("activeDeadlineSeconds")
                    started = getattr(pod, "started_mono", None)
                    if ads and started and not pod.terminal() and not pod.kill_reason and \
                            time.monotonic() - started > ads:
                        # the status first, then the kill, as the kubelet's syncPod does
                        pod.kill_reason = "deadline"
                        self.set_failed(pod, "deadline")
                        self.bump(pod)
                        kill += [c.proc for c in pod.containers() if c.proc and c.state == "running"]
            for p in kill:
                kill_container(p.pid, signal.SIGKILL)

    def delete(self, ns, name, grace):
        with self.lock:
            pod = self.pods.get((ns, name))
            if pod is None:
                return 404, status_body(404, 'pods "%s" not found' % name, "NotFound",
                                        {"name": name, "kind": "pods"})
            if pod.deleting:
                return 200, self.render(pod)
            pod.deleting = True
            if not pod.kill_reason:
                pod.kill_reason = "delete"
            pod.obj["metadata"]["deletionTimestamp"] = now_rfc3339()
            pod.obj["metadata"]["deletionGracePeriodSeconds"] = grace
            out = self.bump(pod)
            procs = [c.proc for c in pod.containers() if c.proc and c.state == "running"]
            if not procs and (pod.terminal() or pod.phase == "Pending"):
                still_starting = pod.phase == "Pending" and any(c.state == "running" for c in pod.init)
                if not still_starting:
                    self.finish_delete(pod)
                    return 200, out
        for p in procs:
            kill_container(p.pid, signal.SIGTERM if grace > 0 else signal.SIGKILL)
        if grace > 0 and procs:
            def later():
                time.sleep(grace)
                for p in procs:
                    if p.poll() is None:
                        kill_container(p.pid, signal.SIGKILL)
            threading.Thread(target=later, daemon=True).start()
        return 200, out

    def shutdown(self):
        with self.lock:
            procs = [c.proc for p in self.pods.values() for c in p.containers() if c.proc]
        for p in procs:
            kill_container(p.pid, signal.SIGKILL)


# --- HTTP ----------------------------------------------------------------------------------------

class StreamCut(Exception):
    """A fault asked for the connection to be cut."""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sluice-k8s-sim/1"

    def log_message(self, fmt, *args):
        if self.server.sim.args.verbose:
            sys.stderr.write("sim: %s\n" % (fmt % args))

    # plumbing

    def send_json(self, code, obj, headers=None):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def send_status(self, code, message, reason=None, details=None, headers=None):
        self.send_json(code, status_body(code, message, reason, details), headers)

    def start_chunked(self, ctype):
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def end_chunked(self):
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def cut(self):
        """Drops the connection abruptly: no final chunk."""
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        raise StreamCut()

    def body_json(self):
        return json.loads(self.raw_body or b"{}")

    def authorized(self):
        tok = self.server.sim.args.token
        if not tok:
            return True
        if self.headers.get("Authorization") == "Bearer " + tok:
            return True
        if getattr(self.server, "client_verified", False) and self.client_cert_ok():
            return True
        self.send_status(401, "Unauthorized", "Unauthorized")
        return False

    def client_cert_ok(self):
        try:
            return bool(self.connection.getpeercert())
        except (AttributeError, ValueError):
            return False

    # dispatch

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def dispatch(self, method):
        sim = self.server.sim
        url = urllib.parse.urlsplit(self.path)
        path = url.path
        # the body is always read first, so an early answer leaves the connection usable
        n = int(self.headers.get("Content-Length") or 0)
        self.raw_body = self.rfile.read(n) if n else b""
        q = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
        try:
            if path.startswith("/_sim/"):
                return self.control(method, path)
            with sim.lock:
                sim.stats["requests"] += 1
                sim.stats[self.classify(method, path, q)] += 1
            if not self.authorized():
                return
            fault = sim.take_fault(method, path, q)
            if fault:
                action = fault.get("action", "status")
                if action == "drop":
                    self.cut()
                if action == "fixture" and "http_status" in sim.fixtures.get(fault.get("name"), {}):
                    fx = sim.fixtures[fault["name"]]
                    body = json.dumps(fx["body"]).encode()
                    self.send_response(fx["http_status"])
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    for k, v in fx.get("headers", {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if action == "status":
                    code = fault.get("code", 500)
                    headers = {}
                    details = None
                    if fault.get("retry_after") is not None:
                        headers["Retry-After"] = str(fault["retry_after"])
                        details = {"retryAfterSeconds": fault["retry_after"]}
                    return self.send_status(code, fault.get("message", MESSAGES.get(code, "injected fault")),
                                            fault.get("reason"), details, headers)
            m = re.match(r"^/api/v1/namespaces/([^/]+)/pods(?:/([^/]+))?(?:/(log))?$", path)
            if not m:
                if path in ("/api", "/api/"):
                    return self.send_json(200, {"kind": "APIVersions", "versions": ["v1"],
                                                "serverAddressByClientCIDRs": []})
                return self.send_status(404, "the server could not find the requested resource", "NotFound")
            ns, name, sub = m.group(1), m.group(2), m.group(3)
            if method == "POST" and not name:
                try:
                    obj = self.body_json()
                except ValueError as e:
                    return self.send_status(400, "error decoding request body: %s" % e, "BadRequest")
                if obj.get("metadata", {}).get("namespace") not in (None, ns):
                    return self.send_status(400, "the namespace of the provided object does not match the namespace sent on the request", "BadRequest")
                code, out = sim.create(ns, obj)
                if fault and fault.get("action") == "drop_after_apply":
                    self.cut()
                return self.send_json(code, out)
            if method == "GET" and not name:
                if q.get("watch") in ("1", "true"):
                    return self.watch(ns, q, fault)
                return self.list(ns, q)
            if method == "GET" and name and not sub:
                with sim.lock:
                    pod = sim.pods.get((ns, name))
                    out = sim.render(pod) if pod else None
                if out is None:
                    return self.send_status(404, 'pods "%s" not found' % name, "NotFound",
                                            {"name": name, "kind": "pods"})
                return self.send_json(200, out)
            if method == "GET" and sub == "log":
                return self.log(ns, name, q, fault)
            if method == "DELETE" and name and not sub:
                grace = 30
                if q.get("gracePeriodSeconds"):
                    grace = int(q["gracePeriodSeconds"])
                else:
                    try:
                        opts = self.body_json()
                        if opts.get("gracePeriodSeconds") is not None:
                            grace = int(opts["gracePeriodSeconds"])
                    except ValueError:
                        pass
                code, out = sim.delete(ns, name, grace)
                return self.send_json(code, out)
            return self.send_status(405, "method not allowed", "MethodNotAllowed")
        except StreamCut:
            return
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.close_connection = True
        except Exception as e:
            traceback.print_exc()
            try:
                self.send_status(500, "simulator error: %s" % e, "InternalError")
            except OSError:
                pass

    @staticmethod
    def classify(method, path, q):
        if path.endswith("/log"):
            return "log"
        if method == "POST":
            return "create"
        if method == "DELETE":
            return "delete"
        if re.match(r"^/api/v1/namespaces/[^/]+/pods$", path):
            return "watch" if q.get("watch") in ("1", "true") else "list"
        return "get"

    # pods: list and watch

    def list(self, ns, q):
        sim = self.server.sim
        try:
            sel = parse_selector(q.get("labelSelector"))
        except ValueError as e:
            return self.send_status(400, str(e), "BadRequest")
        with sim.lock:
            items = [sim.render(p) for (pns, _), p in sorted(sim.pods.items())
                     if pns == ns and selector_matches(sel, p.obj["metadata"].get("labels"))]
            rv = str(sim.rv)
        self.send_json(200, {"kind": "PodList", "apiVersion": "v1",
                             "metadata": {"resourceVersion": rv}, "items": items})

    def watch(self, ns, q, fault):
        sim = self.server.sim
        try:
            sel = parse_selector(q.get("labelSelector"))
        except ValueError as e:
            return self.send_status(400, str(e), "BadRequest")
        bookmarks = q.get("allowWatchBookmarks") in ("1", "true")
        timeout = float(q.get("timeoutSeconds") or 1800)
        deadline = time.monotonic() + timeout
        rv_text = q.get("resourceVersion", "")
        expired = fault and fault.get("action") == "expire"
        cut_after = fault.get("after_events") if fault and fault.get("action") == "cut" else None
        sent = 0
        with sim.lock:
            epoch = sim.stream_epoch
            start = int(rv_text) if rv_text not in ("", "0") else None
            if start is not None and (start < sim.compacted_rv or
                                      (sim.history and start < sim.history[0][0] - 1)):
                expired = True
            backlog = []
            if start is None:
                for (pns, _), p in sorted(sim.pods.items()):
                    if pns == ns and selector_matches(sel, p.obj["metadata"].get("labels")):
                        backlog.append(("ADDED", sim.render(p)))
                pos = sim.rv
            else:
                pos = start
        self.start_chunked("application/json;stream=watch")
        if fault and fault.get("action") == "fixture_events":
            # fixture lines first (e.g. an ERROR with reason Gone), then the stream ends there
            for name in fault.get("names", []):
                line = sim.fixtures.get(name, {}).get("line")
                if line:
                    self.chunk(json.dumps(line).encode() + b"\n")
            return self.end_chunked()
        if expired:
            with sim.lock:
                cur = sim.rv
            self.chunk(json.dumps({"type": "ERROR", "object": status_body(
                410, "too old resource version: %s (%d)" % (rv_text, cur), "Expired")}).encode() + b"\n")
            return self.end_chunked()
        for etype, obj in backlog:
            self.chunk(json.dumps({"type": etype, "object": obj}).encode() + b"\n")
            sent += 1
            if cut_after is not None and sent >= cut_after:
                self.cut()
        last_bookmark = time.monotonic()
        while True:
            with sim.lock:
                events = [(rv, t, o) for rv, t, o in sim.history if rv > pos]
                if not events:
                    wait = min(deadline, last_bookmark + sim.args.bookmark_seconds) - time.monotonic()
                    if wait > 0 and sim.stream_epoch == epoch:
                        sim.cond.wait(min(wait, 1.0))
                        events = [(rv, t, o) for rv, t, o in sim.history if rv > pos]
                cur = sim.rv
                dropped = sim.stream_epoch != epoch
            if dropped:
                self.cut()
            for rv, etype, obj in events:
                pos = rv
                if obj["metadata"].get("namespace") != ns or \
                        not selector_matches(sel, obj["metadata"].get("labels")):
                    continue
                self.chunk(json.dumps({"type": etype, "object": obj}).encode() + b"\n")
                sent += 1
                if cut_after is not None and sent >= cut_after:
                    self.cut()
            if not events:
                pos = max(pos, cur)
            now = time.monotonic()
            if now >= deadline:
                return self.end_chunked()
            if bookmarks and now - last_bookmark >= sim.args.bookmark_seconds:
                last_bookmark = now
                self.chunk(json.dumps({"type": "BOOKMARK", "object": {
                    "kind": "Pod", "apiVersion": "v1",
                    "metadata": {"resourceVersion": str(pos)}}}).encode() + b"\n")

    # pods/log

    def log(self, ns, name, q, fault):
        sim = self.server.sim
        with sim.lock:
            pod = sim.pods.get((ns, name))
            if pod is None:
                return self.send_status(404, 'pods "%s" not found' % name, "NotFound",
                                        {"name": name, "kind": "pods"})
            cname = q.get("container")
            if not cname:
                if len(pod.main) != 1:
                    return self.send_status(400, "a container name must be specified for pod %s, choose one of: [%s]" % (
                        name, " ".join(c.name for c in pod.main)), "BadRequest")
                cname = pod.main[0].name
            c = pod.container(cname)
            if c is None:
                return self.send_status(400, "container %s is not valid for pod %s" % (cname, name), "BadRequest")
            if c.state == "waiting":
                return self.send_status(400, 'container "%s" in pod "%s" is waiting to start: %s' % (
                    cname, name, c.waiting_reason), "BadRequest")
            epoch = sim.stream_epoch
        follow = q.get("follow") in ("1", "true")
        stamps = q.get("timestamps") in ("1", "true")
        since_ns = None
        try:
            if q.get("sinceTime"):
                since_ns = parse_time(q["sinceTime"])
            elif q.get("sinceSeconds"):
                since_ns = time.time_ns() - int(q["sinceSeconds"]) * 1_000_000_000
            tail = int(q["tailLines"]) if q.get("tailLines") else None
            limit = int(q["limitBytes"]) if q.get("limitBytes") else None
        except ValueError as e:
            return self.send_status(400, str(e), "BadRequest")
        cut_after = fault.get("after_bytes") if fault and fault.get("action") == "cut" else None
        self.start_chunked("text/plain")
        idx = 0
        with sim.lock:
            if tail is not None:
                idx = max(0, len(c.entries) - tail)
        sent = 0
        while True:
            with sim.lock:
                batch = c.entries[idx:]
                idx += len(batch)
                done = c.state == "terminated" or pod.deleting and c.state != "running"
                if not batch and follow and not done and sim.stream_epoch == epoch:
                    sim.cond.wait(1.0)
                    continue
                dropped = sim.stream_epoch != epoch
            if dropped:
                self.cut()
            out = []
            for ts, data in batch:
                if since_ns is not None and ts < since_ns:
                    continue
                out.append((ts_nano(ts) + " ").encode() + data if stamps else data)
            data = b"".join(out)
            if limit is not None and sent + len(data) >= limit:
                data = data[:limit - sent]
                if data:
                    self.chunk(data)
                return self.end_chunked()
            if cut_after is not None and sent + len(data) >= cut_after:
                part = data[:cut_after - sent]
                if part:
                    self.chunk(part)
                self.cut()
            if data:
                self.chunk(data)
                sent += len(data)
            if not follow or (done and idx >= len(c.entries)):
                return self.end_chunked()

    # control

    def control(self, method, path):
        sim = self.server.sim
        if method == "GET" and path == "/_sim/stats":
            with sim.lock:
                out = dict(sim.stats)
                out["live_pods"] = len(sim.pods)
                out["peak_live_pods"] = sim.live_peak
                out["resource_version"] = sim.rv
                out["faults"] = [dict(f) for f in sim.faults]
            return self.send_json(200, out)
        if method == "GET" and path == "/_sim/pods":
            with sim.lock:
                out = [{"name": p.name, "namespace": p.ns, "dir": p.dir, "phase": p.phase,
                        "node": p.node, "uid": p.obj["metadata"]["uid"],
                        "labels": p.obj["metadata"].get("labels", {}),
                        "pids": [c.proc.pid for c in p.containers() if c.proc]}
                       for p in sim.pods.values()]
            return self.send_json(200, out)
        if method != "POST":
            return self.send_status(405, "method not allowed")
        try:
            body = self.body_json()
        except ValueError as e:
            return self.send_status(400, "bad JSON: %s" % e)
        with sim.lock:
            if path == "/_sim/faults":
                sim.faults.extend(body if isinstance(body, list) else [body])
            elif path == "/_sim/behaviours":
                sim.behaviours.extend(body if isinstance(body, list) else [body])
            elif path == "/_sim/secrets":
                sim.secrets[(body.get("namespace", "default"), body["name"])] = dict(body.get("data", {}))
                sim.cond.notify_all()
            elif path == "/_sim/compact":
                sim.compacted_rv = sim.rv + 1
                sim.history.clear()
            elif path == "/_sim/drop_streams":
                sim.stream_epoch += 1
                sim.cond.notify_all()
            elif path == "/_sim/reset":
                sim.faults.clear()
                sim.behaviours.clear()
                sim.stats.clear()
                sim.live_peak = 0
            else:
                return self.send_status(404, "no such control endpoint")
        return self.send_json(200, {"ok": True})


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    ap.add_argument("--schema")
    ap.add_argument("--claim", action="append", default=[], help="NAME=HOSTDIR")
    ap.add_argument("--node", action="append", default=[], help="JSON: name, labels, taints, gpus")
    ap.add_argument("--token")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--client-ca")
    ap.add_argument("--bookmark-seconds", type=float, default=1.0)
    ap.add_argument("--history", type=int, default=100000)
    ap.add_argument("--fixtures", help="api-error-fixtures.json: bodies the 'fixture' fault replays")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)

    threading.stack_size(512 * 1024)
    sim = Sim(args)
    server = Server(("127.0.0.1", args.port), Handler)
    server.sim = sim
    sim.port = server.server_address[1]
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        if args.client_ca:
            ctx.load_verify_locations(args.client_ca)
            ctx.verify_mode = ssl.CERT_OPTIONAL
            server.client_verified = True
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=sim.deadline_loop, daemon=True).start()

    def on_term(signum, frame):
        sim.shutdown()
        os._exit(0)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % sim.port)
        os.rename(tmp, args.port_file)
    server.serve_forever(poll_interval=0.5)


if __name__ == "__main__":
    main(sys.argv[1:])
