"""Training: `mlma train` (cli/train_cmds.py) -> load_config (config.py) -> train (loop.py) -> train_step.

    config.py   Config = model dict + DataConfig + TrainConfig, from YAML with --set overrides
    data.py     datasets -> temperature mixing -> filters -> DynamicBucketingSampler -> batches
    optim.py    AdamW (no decay on biases, norms, A_log, D) + Noam warmup
    state.py    TrainState: model, optimizer, schedule, scaler, average, faults, sampler, step, epoch;
                its state_dict() is the checkpoint format
    loop.py     train(): the loop; train_step(): forward, CTC loss, backward, optimizer step; validation
    ddp.py      torchrun process group helpers;   faults.py  bad batches, OOM, SIGINT/SIGTERM
    average.py  `mlma average` (last / best K);   metrics.py  log, JSONL, TensorBoard, PNG, progress
Checkpoint files and load_for_inference: mlma_cli/checkpoint.py; averaging arithmetic: mlma_cli/averaging.py.
"""
