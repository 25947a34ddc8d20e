r"""Where a compiled training step spends its time: per part of the model, forward and backward.

  python benchmarks/step_split.py                           # STAE's compressor step, synthetic
  python benchmarks/step_split.py --stage=classifier        # the classifier's own step
  python benchmarks/step_split.py --tag=deepisc --steps=3

Why (issue 28, item 2): before a step is made cheaper, the profile says where its time goes. The
step is the one `benchmarks/train_step.py` times (random uint8 clips, the config as committed).
After one compiling call, `--steps` calls run under `jax.profiler.trace`; every XLA operation the
trace records (a fusion, a convolution, a copy) is named back to the part of the model that made it
through the compiled program's metadata: the named scopes `stae_encoder`, `entropy_rate`,
`decoder`, `classifier` (with `motion_features` inside it) of STAE's forward
(`stae_jax.systems.stae.forward`), `optimizer` of the trainer's update; anything else (the losses,
the masks, unscoped systems' modules) is "other". Operations under `transpose(...)` are the
backward pass. Times are thread-milliseconds per step (XLA runs operations on both cores at once,
so they can sum to more than the wall time, which is printed beside them); loops (`while`) are not
counted themselves, only the operations inside them.
"""

import argparse
import collections
import glob
import gzip
import json
import os
import re
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from absl import flags  # pylint: disable=wrong-import-position
import jax  # pylint: disable=wrong-import-position

import train_step  # pylint: disable=wrong-import-position
from stae_jax.systems import loading  # pylint: disable=wrong-import-position

#: Named scopes, the most specific first (motion_features sits inside classifier).
PARTS = (("optimizer", "optimizer"), ("motion_features", "classifier: motion features"),
         ("classifier", "classifier: transformer"), ("decoder", "decoder"),
         ("entropy_rate", "entropy model (rate)"), ("stae_encoder", "STAE encoder"))
#: Operations whose time is the time of the operations they run (counted there instead).
CONTAINERS = ("while", "conditional", "call")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*\S.*?\s([a-z][\w\-]*)\(")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s*\(.*\{\s*$")
_CALLS = re.compile(r"calls=%?([\w.\-]+)")


def part_of(op_name: str) -> str:
  for scope, label in PARTS:
    if re.search(rf"(^|[/(]){scope}([/)]|$)", op_name):
      return label
  return "other (losses, masks, ...)"


def instructions(hlo_text: str) -> dict[str, tuple[str, str]]:
  """{instruction name: (opcode, op_name)} of every computation of an HLO module's text. A fusion
  without a name of its own (XLA:CPU's library fusions of dots and convolutions) takes the first
  name found inside the computation it calls, or else its operands' (a convolution's weight
  gradient, for one, is named by neither), a backward operand's first."""
  table, calls, inside, operands, computation = {}, {}, {}, {}, None
  for line in hlo_text.splitlines():
    header = _COMPUTATION.match(line)
    if header:
      computation = header.group(1)
      continue
    match = _INSTRUCTION.match(line)
    if not match:
      continue
    op_name = _OP_NAME.search(line)
    name = op_name.group(1) if op_name else ""
    if computation is not None and "/" in name:
      inside.setdefault(computation, name)
    called = _CALLS.search(line)
    if called:
      calls[match.group(1)] = called.group(1)
    arguments = line[match.end():].split(")", 1)[0]
    operands[match.group(1)] = re.findall(r"%([\w.\-]+)", arguments)
    table[match.group(1)] = (match.group(2), name)
  for instruction, computation in calls.items():
    opcode, name = table[instruction]
    if "/" not in name and computation in inside:
      table[instruction] = (opcode, inside[computation])
  for instruction, (opcode, name) in list(table.items()):
    if "/" not in name:
      named = [table[o][1] for o in operands.get(instruction, ()) if o in table]
      named = [n for n in named if "transpose(" in n] + [n for n in named if "/" in n]
      if named:  # a backward operand makes it backward (a weight gradient reads activations)
        table[instruction] = (opcode, named[0])
  return table


def split(events, table, steps: int) -> dict[tuple[str, str], float]:
  """{(part, "forward"/"backward"): thread-ms per step} from a trace's complete events."""
  totals = collections.defaultdict(float)
  for event in events:
    if event.get("ph") != "X" or event.get("name") not in table:
      continue
    opcode, op_name = table[event["name"]]
    if opcode in CONTAINERS:
      continue
    direction = "backward" if "transpose(" in op_name else "forward"
    totals[(part_of(op_name), direction)] += float(event.get("dur", 0.0)) / 1e3 / steps
  return dict(totals)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--stage", default="compressor", help="classifier, compressor or joint")
  parser.add_argument("--tag", default="stae", help="the system (ignored for the classifier)")
  parser.add_argument("--steps", type=int, default=5)
  args = parser.parse_args()
  flags.FLAGS.mark_as_parsed()
  from configs import synthetic  # pylint: disable=g-import-not-at-top
  config = synthetic.get_config(None)
  tag = None if args.stage == loading.CLASSIFIER else args.tag  # the shared stage: no system
  jitted, state, batch, op = train_step.build_step(config, args.stage, tag)
  state, metrics = jitted.train(state, batch, op)  # compiles
  jax.block_until_ready(metrics)
  step = jitted._train[op]  # pylint: disable=protected-access
  compiled = step.lower(state, batch, None).compile()
  table = instructions(compiled.as_text())
  walls = []
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir):
      for _ in range(args.steps):
        began = time.perf_counter()
        state, metrics = jitted.train(state, batch, op)
        jax.block_until_ready(metrics)
        walls.append(time.perf_counter() - began)
    paths = sorted(glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True))
    if not paths:
      raise SystemExit(f"the profiler wrote no trace under {trace_dir}")
    with gzip.open(paths[-1]) as f:
      events = json.load(f)["traceEvents"]
  totals = split(events, table, args.steps)
  if not totals:
    raise SystemExit("no traced operation matched the compiled program (a JAX whose traces do not "
                     "name XLA operations?)")
  wall = statistics.median(walls) * 1e3
  counted = sum(totals.values())
  name = f"{config.name}:{args.stage}" + (f"[{tag}]" if tag else "")
  print(f"{name}: batch {int(config.data.batch_size)}, wall {wall:.0f} ms a step (median of "
        f"{args.steps}, traced), {counted:.0f} thread-ms of operations a step; "
        f"{jax.devices()[0].device_kind}, {os.cpu_count()} cores, jax {jax.__version__}")
  print()
  print("| part | forward ms | backward ms | share |")
  print("|---|---|---|---|")
  parts = sorted({p for p, _ in totals}, key=lambda p: -(totals.get((p, "forward"), 0.0) +
                                                          totals.get((p, "backward"), 0.0)))
  for part in parts:
    fwd, bwd = totals.get((part, "forward"), 0.0), totals.get((part, "backward"), 0.0)
    print(f"| {part} | {fwd:.0f} | {bwd:.0f} | {100 * (fwd + bwd) / counted:.1f}% |")


if __name__ == "__main__":
  main()
