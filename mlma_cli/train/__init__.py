"""Training: `mlma train` (cli/train_cmds.py) -> load_config (config.py) -> train (loop.py).

    config.py   Config = model dict + DataConfig + TrainConfig, from YAML with --set overrides
    data.py     datasets -> temperature mixing -> filters -> DynamicBucketingSampler -> batches
    optim.py    AdamW (no decay on biases, norms, A_log, D) + Noam warmup
    loop.py     the loop: forward, CTC loss, backward, step, validation, checkpoints
    ddp.py      torchrun process group helpers;   faults.py  bad batches, OOM, SIGINT/SIGTERM
    average.py  running weight average, `mlma average`;   metrics.py  log, JSONL, TensorBoard, PNG, progress
Checkpoint format and load_for_inference: mlma_cli/checkpoint.py.
"""
