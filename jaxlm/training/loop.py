"""The one training loop of every task: run folder, mesh, state, steps, eval, checkpoints.

`run(config, workdir)` is what `python -m jaxlm.main` calls, for pretraining
and fine-tuning alike; it is importable from a notebook. The task
(jaxlm/tasks/) supplies data, loss and metrics; the loop owns the rest:
accumulation and the NaN/Inf guard (in the step), SIGTERM/Ctrl-C checkpoints,
restore with fall-back, prefetch, profiling, metrics.jsonl and TensorBoard,
the progress line. Bad settings stop with a ConfigError before any work.
"""

from __future__ import annotations

import datetime
import os
import tempfile
import time

import jax

from jaxlm import rundir, tasks
from jaxlm.config import Config, ConfigError, to_dict
from jaxlm.parallel import pipeline
from jaxlm.parallel import sharding
from jaxlm.training import flops as flops_lib
from jaxlm.training import health, memory
from jaxlm.training import steps as steps_lib
from jaxlm.training.checkpoint import Checkpointer
from jaxlm.training.metrics import (MetricWriter, StepTrace, device_memory, format_bytes,
                                    format_duration, log)


def new_workdir(root: str = 'runs') -> str:
  """A fresh run folder name: runs/YYYYmmdd-HHMMSS."""
  stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
  path = os.path.join(root, stamp)
  suffix = 1
  while os.path.exists(path):
    path = os.path.join(root, f'{stamp}-{suffix}')
    suffix += 1
  return path


def _global_batch(mesh, local: dict) -> dict:
  sh = sharding.batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sh, v) for k, v in local.items()}


def evaluate(s: steps_lib.Steps, task: tasks.Task, params, batches) -> dict:
  """The task's eval metrics over its eval batches."""
  outputs = [s.eval(params, _global_batch(s.mesh, b)) for b in batches]
  return task.eval_metrics(jax.device_get(outputs))


def _check_workdir(workdir: str) -> None:
  """A run folder that cannot be one: one line, before any work (local folders)."""
  if not rundir.is_local(workdir):
    return  # an object store (gs://...): its folders need no making
  probe = workdir
  while probe and not os.path.exists(probe):
    probe = os.path.dirname(probe)
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ConfigError(f'--workdir={workdir} is a file, not a folder; pass a new or'
                      ' existing run folder')
  if probe and not os.path.isdir(probe):
    raise ConfigError(f'--workdir={workdir} lies under {probe}, which is a file;'
                      ' pass a path under a folder')
  if probe and not os.path.exists(workdir):
    try:  # os.access says yes to root everywhere: try it, and leave nothing behind
      os.rmdir(tempfile.mkdtemp(prefix='.jaxlm-probe-', dir=probe))
    except OSError as e:
      raise ConfigError(f'--workdir={workdir}: cannot create it in {probe} ({e.strerror});'
                        ' pass a run folder where you can write') from None


def run(c: Config, workdir: str | None = None) -> dict:
  """Trains (or resumes) any task; returns the last logged and eval metrics.

  The run folder is made only once the config is valid and the data read:
  a failed start leaves nothing behind.
  """
  workdir = workdir or new_workdir()
  _check_workdir(workdir)
  task = tasks.for_config(c)
  mesh = sharding.make_mesh(c.parallel)
  sharding.check_layout(c, mesh)
  resuming = rundir.has_checkpoints(workdir)
  c = task.prepare(workdir, resuming)
  sharding.check_layout(c, mesh)  # the resolved vocabulary, a pretrained architecture
  config_dict = to_dict(c)
  ckpt = None
  if resuming:
    ckpt = Checkpointer(workdir, keep=c.train.keep_checkpoints, every=c.train.checkpoint_every)
    ckpt.check_compatible(config_dict)
    latest = ckpt.latest_step()
    try:
      saved = ckpt.saved_config(latest)
    except Exception:  # noqa: BLE001  unreadable: restore_latest deals with it
      saved = None
    if saved is not None:
      task.check_resumable(saved, latest, ckpt.directory)
  rundir.make(workdir)
  log(f'run folder: {workdir} ({"resuming" if resuming else "new"})')
  if jax.process_index() == 0:
    task.save(workdir)
    rundir.write_config_dict(workdir, config_dict)
  if ckpt is None:
    ckpt = Checkpointer(workdir, keep=c.train.keep_checkpoints, every=c.train.checkpoint_every)

  pidx, pcount = jax.process_index(), jax.process_count()
  eval_batches = task.eval_batches(pidx, pcount)
  peak, peak_source = flops_lib.peak_flops_per_second()
  with sharding.activate(mesh):
    s = steps_lib.build(c, mesh, task.objective(pipeline.stack_for(c.parallel,
                                                                   mesh.shape['pipeline'])))
    start, state = ckpt.restore_latest(s.abstract_state)
    if start is None:
      state = s.init(task.start_params(s.abstract_state.params))
    else:  # checkpoints keep layers in canonical order, whatever the pipeline
      state = s.from_canonical(state)
    start = start or 0
    if start >= c.train.steps:  # resumed at or past the end: one line, exit 0
      log(f'{workdir} holds checkpoint {start}, at or past train.steps={c.train.steps}:'
          ' nothing to train; raise train.steps to train on')
      ckpt.close()
      return {'step': start}
    n_params = sum(x.size for x in jax.tree.leaves(state.params))
    log(f'{task.describe(n_params)}; mesh {dict(mesh.shape)} on {jax.device_count()}'
        f' {jax.devices()[0].platform} devices; peak {peak / 1e12:.2f} TFLOP/s ({peak_source})')
    if s.pipeline is not None:
      log(pipeline.describe(s.pipeline))
    if start:
      log(f'resumed from step {start}')

    writer = MetricWriter(workdir)
    try:
      result = _loop(c, task, s, state, start, eval_batches, ckpt, writer, peak,
                     StepTrace(c.profile, workdir), workdir)
    finally:
      writer.close()
      ckpt.close()
  return result


def _loop(c, task, s, state, start, eval_batches, ckpt, writer, peak, trace, workdir) -> dict:
  t = c.train
  config_dict = to_dict(c)
  pidx, pcount = jax.process_index(), jax.process_count()

  def batch(step):
    return _global_batch(s.mesh, task.train_batch(step, pidx, pcount))

  t0 = time.perf_counter()
  train_step = s.train.lower(state, batch(start)).compile()
  log(f'compiled the train step in {time.perf_counter() - t0:.1f}s')
  log(memory.memory_summary(c, s, train_step))

  result = {}
  queued = []  # (step, device metrics): read one step late, never stalling the device
  watch = health.LossWatch(t.on_nonfinite, t.spike_factor, log)
  window = {'start': time.perf_counter(), 'steps': 0}
  run_start = time.perf_counter()

  def after_step(done, metrics):
    values = {k: float(v) for k, v in jax.device_get(metrics).items()}
    watch.check(done, values)
    window['steps'] += 1
    if done % t.log_every == 0 or done == t.steps:
      result.update(_report(task, done, values, window, peak, t.steps, run_start, start,
                            writer))
      window.update(start=time.perf_counter(), steps=0)

  def drain():  # check every queued step: nothing is evaluated or saved unchecked
    while queued:
      after_step(*queued.pop(0))

  stop = health.StopRequest()
  with stop.installed():
    try:
      next_batch = batch(start)
      for step in range(start, t.steps):
        trace.before(step, state)
        state, metrics = train_step(state, next_batch)
        trace.after(step + 1, state)
        # Prefetch: the next batch is cut and sent to the devices while this
        # step runs, before the host waits on anything.
        next_batch = batch(step + 1) if step + 1 < t.steps else None
        queued.append((step + 1, metrics))
        # At most one step in flight: the device never idles, the host never
        # runs ahead (many queued steps can deadlock XLA:CPU's collectives).
        while len(queued) > 1:
          after_step(*queued.pop(0))
        done = step + 1
        stopping = stop.requested()
        evaluate_now = done % t.eval_every == 0 or done == t.steps
        save_now = ckpt.due(done, force=done == t.steps or stopping)
        if evaluate_now or save_now or stopping:
          drain()
        if evaluate_now:
          m = evaluate(s, task, state.params, eval_batches)
          writer.write(done, m)
          log(f'eval  step {done:>6} | {task.eval_line(m)}')
          result['eval'] = {k.removeprefix('eval_'): v for k, v in m.items()}
          if 'eval_loss' in m:
            result['eval_loss'] = m['eval_loss']
        if save_now:
          ckpt.save(done, s.to_canonical(state), config_dict, force=True)
          log(f'checkpoint step {done} -> {ckpt.directory}')
        if stopping:
          ckpt.wait()
          log(f'stopped by {stop.signal_name or "another process"} after step {done};'
              f' checkpoint {done} is in {ckpt.directory}; run the same command to resume')
          result.update(step=done, stopped=True)
          return result
      drain()
    except health.NonFiniteHalt as e:
      # The device froze the state at the first bad step: it is the last good one.
      good = int(jax.device_get(state.step))
      if ckpt.due(good, force=True):
        ckpt.save(good, s.to_canonical(state), config_dict, force=True)
      ckpt.wait()
      raise health.NonFiniteHalt(
          f'{e}; saved the last good state as checkpoint {good} in {ckpt.directory};'
          ' lower train.learning_rate, or set train.on_nonfinite=skip, and resume') from None
    finally:  # a stop signal, a halt or an error: still close the trace
      trace.stop()
  ckpt.wait()
  log(f'trained steps {start}..{t.steps} in {format_duration(time.perf_counter() - run_start)}')
  # The plain model (no pipeline) on canonical-order parameters.
  task.finish(s.to_canonical(state.params), workdir, result)
  result['step'] = int(jax.device_get(state.step))
  return result


def _report(task, step, values, window, peak, total_steps, run_start, start, writer) -> dict:
  elapsed = max(time.perf_counter() - window['start'], 1e-9)
  tok_s = window['steps'] * task.tokens_per_step / elapsed
  values = dict(values, tokens_per_sec=tok_s,
                examples_per_sec=window['steps'] * task.examples_per_step / elapsed,
                mfu=flops_lib.mfu(tok_s, task.flops_per_token, peak), **device_memory())
  per_step = (time.perf_counter() - run_start) / max(step - start, 1)
  writer.write(step, values)
  skipped = int(values.get('nonfinite_steps', 0))
  memory = format_bytes(values['memory_in_use_bytes'])
  if 'peak_memory_bytes' in values:
    memory += f' (peak {format_bytes(values["peak_memory_bytes"])})'
  log(f'train step {step:>6}/{total_steps} | loss {values["loss"]:.4f}{task.train_line(values)}'
      f' | lr {values["learning_rate"]:.2e} | grad norm {values["grad_norm"]:.2f}'
      f' | param norm {values["param_norm"]:.1f}'
      + (f' | {values["examples_per_sec"]:,.0f} examples/s' if task.examples_per_line
         else f' | {tok_s:,.0f} tok/s') +
      f' | MFU {100 * values["mfu"]:.1f}% | mem {memory}'
      + (f' | {skipped} skipped' if skipped else '') +
      f' | ETA {format_duration(per_step * (total_steps - step))}')
  out = {'loss': values['loss'], 'tokens_per_sec': tok_s}
  if 'accuracy' in values:
    out['accuracy'] = values['accuracy']
  return out
