r"""serve.py's start-up, twice from the same workdir, for BENCHMARKS.md "Serving start-up".

  python benchmarks/serve_startup.py --workdir=/tmp/mjD_serve [--config=configs/synthetic.py]
      [--starts=2] [--methods=stae,h264] [--fresh_cache]

Launches `python serve.py --config=... --workdir=... --address=127.0.0.1:<free port>` as its own
process --starts times in a row, each time timing from the launch until it prints "ready", then
stops it (SIGINT) and waits for it to exit. Beside each start it records the load average
(`/proc/loadavg`, read just before the launch and just after ready), the CPU time serve.py used
until ready (user + system, all its threads: less dependent on what else runs than the wall
time) and the warm-up's compile count from serve.py's log line "warm-up: N compiles" (cache
loads counted: JAX counts a deserialised executable as a compile). --fresh_cache moves `<workdir>/compile_cache` aside first
(to `compile_cache.before-<time>`), so the first start compiles everything. Prints what it measured
as JSON and a markdown table.

--breakdown instead does serve.py's start-up steps in this process, with the workdir's cache, and
times each: imports, restoring each learned system, the classifier and the baselines
(`loading.load_codecs`), and each method's warm-up (`EdgeService.warm_up`, with its compile count).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

from absl import app
from absl import flags

from stae_jax import REPO_ROOT

_CONFIG = flags.DEFINE_string("config", "configs/synthetic.py", "serve.py's --config.")
_WORKDIR = flags.DEFINE_string("workdir", None, "A trained (and evaluated) workdir.", required=True)
_STARTS = flags.DEFINE_integer("starts", 2, "Starts in a row.")
_METHODS = flags.DEFINE_list("methods", None, "serve.py's --methods (default: its default).")
_FRESH = flags.DEFINE_bool("fresh_cache", False, "Move the workdir's compile_cache aside first.")
_TIMEOUT = flags.DEFINE_float("timeout", 900.0, "Longest one start may take (s).")
_BREAKDOWN = flags.DEFINE_bool("breakdown", False, "Time serve.py's start-up steps in-process.")


def _free_port() -> int:
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def _loadavg() -> str:
  return " ".join(pathlib.Path("/proc/loadavg").read_text().split()[:3])


def _cpu_seconds(pid: int) -> float:
  """User + system CPU time of process `pid` and its threads so far (/proc/<pid>/stat)."""
  fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
  return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _one_start(command: list[str]) -> dict:
  before = _loadavg()
  start = time.perf_counter()
  process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
  lines, ready, compiles = [], None, None
  try:
    for line in process.stdout:
      lines.append(line)
      found = re.search(r"warm-up: (\d+) compiles", line)
      if found:
        compiles = int(found.group(1))
      if "serve.py: ready" in line:
        ready = time.perf_counter() - start
        cpu = _cpu_seconds(process.pid)
        break
      if time.perf_counter() - start > _TIMEOUT.value:
        break
  finally:
    after = _loadavg()
    process.send_signal(signal.SIGINT)
    try:
      process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
      process.kill()
      process.communicate()
  if ready is None:
    raise SystemExit("serve.py did not get ready:\n" + "".join(lines[-30:]))
  return dict(ready_seconds=round(ready, 1), cpu_seconds=round(cpu, 1), compiles=compiles,
              load_before=before,
              load_at_ready=after, ready_line=lines[-1].strip())


def _breakdown(workdir: pathlib.Path) -> None:
  started = time.perf_counter()
  steps = []

  def step(name: str, since: float, **extra) -> float:
    now = time.perf_counter()
    steps.append(dict(step=name, seconds=round(now - since, 1), **extra))
    print(json.dumps(steps[-1]), flush=True)
    return now

  before = _loadavg()
  from stae_jax.library_logs import quiet_library_logs  # pylint: disable=g-import-not-at-top
  quiet_library_logs()  # as serve.py
  from stae_jax.serving import server as server_lib  # pylint: disable=g-import-not-at-top
  from stae_jax.systems import loading  # pylint: disable=g-import-not-at-top
  now = step("imports (jax, the serving package, the systems)", started)
  loading.use_compile_cache(workdir)
  server_lib.compile_count()  # starts counting
  trained = loading.discover_systems(workdir)
  codecs = []
  for tag in trained:
    codecs += loading.load_codecs(workdir, [tag])
    now = step(f"restore {tag}", now)
  classify = loading.load_classifier(None, workdir)
  now = step("restore the classifier", now)
  names = [n for n in ("h264", "raw") if not _METHODS.value or n in _METHODS.value]
  codecs += loading.load_codecs(workdir, names, classify=classify)
  now = step(f"build {', '.join(names)} (results.json's grid)", now)
  for codec in codecs:
    if codec.skipped or (_METHODS.value and codec.tag not in _METHODS.value):
      continue
    compiles = server_lib.EdgeService([codec], server_lib.ServeOptions()).warm_up()
    now = step(f"warm up {codec.tag} ({len(codec.points)} points)", now, compiles=compiles)
  total = time.perf_counter() - started
  print(json.dumps(dict(total_seconds=round(total, 1), load_before=before,
                        load_after=_loadavg(), steps=steps), indent=1))
  print("| step | seconds | compiles |")
  print("|---|---|---|")
  for one in steps:
    print(f"| {one['step']} | {one['seconds']} | {one.get('compiles', '')} |")
  print(f"| total | {total:.1f} | |")


def main(argv):
  del argv
  workdir = pathlib.Path(_WORKDIR.value).absolute()
  if _BREAKDOWN.value:
    _breakdown(workdir)
    return
  cache = workdir / "compile_cache"
  if _FRESH.value and cache.exists():
    cache.rename(workdir / f"compile_cache.before-{int(time.time())}")
  command = [sys.executable, "serve.py", f"--config={_CONFIG.value}", f"--workdir={workdir}"]
  if _METHODS.value:
    command.append(f"--methods={','.join(_METHODS.value)}")
  runs = []
  for i in range(_STARTS.value):
    port = _free_port()
    run = _one_start(command + [f"--address=127.0.0.1:{port}"])
    run.update(start=i + 1, cache_files=len(list(cache.glob("*"))) if cache.is_dir() else 0)
    runs.append(run)
    print(json.dumps(run), flush=True)
  print(json.dumps(dict(command=" ".join(command[1:]) + " --address=127.0.0.1:<port>",
                        cpus=os.cpu_count(), runs=runs), indent=1))
  print("| start | ready after | CPU time until ready | warm-up compiles | load average before / "
        "at ready |")
  print("|---|---|---|---|---|")
  for run in runs:
    print(f"| {run['start']} | {run['ready_seconds']} s | {run['cpu_seconds']} s | "
          f"{run['compiles']} | "
          f"{run['load_before']} / {run['load_at_ready']} |")


if __name__ == "__main__":
  app.run(main)
