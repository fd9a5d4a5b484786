"""Checkpoints for multi-rank training (torchrun DDP over gloo/nccl, or DeepSpeed engines).

Layout
------
A run directory holds one folder per checkpoint::

    <directory>/
        step_00001000/
            shared.pt          rank 0 only: {"format", "step", "world_size",
                                             "shared": <caller's dict>}
                               (model / optimizer / scheduler / grad-scaler state dicts that DDP
                               keeps identical on every rank, plus whatever the caller adds)
            rank_00000.pt      every rank: {"format", "step", "rank", "world_size",
            rank_00001.pt                   "state": <caller's rank_state or None>}
            ...                (per-rank RNG states, data position, ...)
            engines/<name>/    one DeepSpeed ``save_checkpoint`` folder per engine (tag "state"):
                               each engine gets its own folder because two engines sharing one
                               folder share one ``latest`` file
            meta.json          written LAST: step, world_size, engine names, file list, created
                               time, torch version
        step_00002000/ ...
        .tmp_step_00003000/    a save in progress (or one a crash interrupted)

Contract
--------
* **Complete** means: a ``step_<8 digits>`` folder that contains ``meta.json``. Folders without
  it and every ``.tmp_*`` folder are never listed, never returned by
  :meth:`CheckpointManager.latest`, and never loaded (nor deleted: a ``step_*`` folder without
  ``meta.json`` may not be ours). ``latest()`` is the complete checkpoint with the highest step.
* **Atomic save.** Every rank writes into the same temporary folder
  ``<directory>/.tmp_step_<step>`` (each file itself through temp + rename, see
  :mod:`pipeline.core.atomic`); after a barrier rank 0 checks that every rank's file is there, writes
  ``meta.json``, fsyncs, and renames the folder to ``step_<step>`` in one ``rename``. A crash at any
  point leaves the previous checkpoint as the latest one, intact. Rank 0 then keeps only the
  newest ``keep_last`` complete checkpoints (``keep_last <= 0`` keeps all; the checkpoint just
  written is never removed) and deletes the ``.tmp_*`` folders crashed runs left behind.
* **Every rank calls** :meth:`~CheckpointManager.save` and :meth:`~CheckpointManager.load` with the
  same arguments (DeepSpeed's ``save_checkpoint``/``load_checkpoint`` are collective). A failure
  on one rank is agreed on with an all-reduce (:func:`pipeline.core.dist.any_rank` over the
  manager's :class:`~pipeline.core.dist.DistContext`), so every rank raises :class:`CheckpointError`
  instead of the healthy ranks hanging in the next collective.
* **Shared filesystem.** All ranks, on all nodes, must see ``directory`` as one filesystem
  (NFS, Lustre, GPFS, ...): rank 0 checks and renames the files the other ranks wrote. Node-local
  storage (DeepSpeed's ``use_node_local_storage``) and decoupled (asynchronous) DeepSpeed
  checkpoint engines are not supported.
* **Loading** uses ``torch.load(..., weights_only=True)`` for ``shared.pt`` and the rank files: put
  only tensors, numbers, strings, ``None`` and lists/tuples/dicts of them in ``shared`` and
  ``rank_state`` (state dicts of modules, optimizers, schedulers and ``GradScaler`` qualify;
  :func:`capture_rng_state` returns such a dict; for a DDP-wrapped model save
  ``model.module.state_dict()``). DeepSpeed loads its own files (its torch checkpoint engine uses
  ``weights_only=False``).
* **Damaged files: all ranks decide together.** ``meta.json`` records every file's size (the
  project's files and DeepSpeed's: ``engines/<name>/state/mp_rank_*_model_states.pt``,
  ``zero_pp_rank_*_optim_states.pt``, ...). Before anything is loaded, every rank checks every
  rank's files: a file that is missing, has another size than when it was saved, or is a
  zip-format torch file without its zip directory (truncated) makes ``load`` raise
  :class:`CheckpointError` on every rank, naming the file and the fix (delete the folder to fall
  back to the previous checkpoint). An engine's ``load_checkpoint`` that fails or loads nothing
  on any rank is agreed on with an all-reduce, so every rank raises. The trainer's resume
  (:func:`pipeline.train.runner.resume`) then tries the previous checkpoint on all ranks
  together: no rank resumes from another step than the others. (A DeepSpeed failure that only
  one rank sees, inside a collective the other ranks have entered, ends at the collective
  timeout, ``dist.first_step_timeout_s``.)
* **World size.** A checkpoint written by N ranks resumes with N ranks. Otherwise ``load`` raises
  :class:`WorldSizeMismatch`, unless ``allow_world_size_change=True``: then ``shared`` (weights,
  optimizer state) loads and ``rank_state`` is ``None`` on *every* rank, even where a file with
  that rank number exists, because per-rank RNG streams and data positions of a different
  partition do not carry over; the caller starts those fresh. Engines load through DeepSpeed,
  which decides whether its ZeRO partitions fit the new world size; when they do not, pass
  ``engine_load_kwargs`` (e.g. ``load_optimizer_states=False``) and any DeepSpeed error comes back
  as :class:`CheckpointError` naming the engine's folder.
* **Same step saved twice** (a run resumed from an older checkpoint): the old ``step_<n>`` is
  renamed to a ``.tmp_`` name, the new one renamed into place, the old one deleted. A crash
  between those two renames leaves neither as ``step_<n>``: ``latest()`` then falls back to the
  checkpoint before it.

Typical use::

    ckpt = CheckpointManager(run_dir / "checkpoints", keep_last=3, ctx=ctx)   # init_distributed's
    if ckpt.latest() is not None:
        got = ckpt.load()
        model.load_state_dict(got.shared["model"]); ...
        restore_rng_state(got.rank_state["rng"])
    ...
    if step % every == 0 or step == last:           # on every rank
        ckpt.save(step, {"model": model.state_dict(), "optimizer": opt.state_dict()},
                  {"rng": capture_rng_state(), "data": loader_position},
                  engines={"generator": g_engine, "discriminator": d_engine})  # DeepSpeed only

A context without a process group (``DistContext(rank, world_size, 0, cpu, None)``) uses no
barrier; a save with ``world_size > 1`` then finalises when rank 0 saves after the other
ranks have written their files (the tests rely on this; rank k > 0 returns the final path before
it exists).

The package: :mod:`~pipeline.train.checkpoint.layout` (folder layout, errors),
:mod:`~pipeline.train.checkpoint.rng` (RNG states), :mod:`~pipeline.train.checkpoint.files`
(durable writes), :mod:`~pipeline.train.checkpoint.manager` (save, keep, find, load).
"""

from pipeline.train.checkpoint.layout import (CheckpointError, Loaded, WorldSizeMismatch,
                                              rank_file_name, step_folder_name)
from pipeline.train.checkpoint.manager import CheckpointManager
from pipeline.train.checkpoint.rng import capture_rng_state, restore_rng_state

__all__ = ["CheckpointError", "CheckpointManager", "Loaded", "WorldSizeMismatch",
           "capture_rng_state", "rank_file_name", "restore_rng_state", "step_folder_name"]
