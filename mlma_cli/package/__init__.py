"""Model packages: one directory with everything inference needs, laid out as a Hugging Face model repo.

    DIR/model.safetensors   weights (CMVN buffers included); metadata {"format": "pt", "mlma": "model-package", "version": "1"}
    DIR/config.json         {"format": "mlma-package", "version": 1, "model_config", "train_config", "data_config",
                             "step", "epoch", "num_averaged", "averaged", "languages", "num_parameters", ...}
    DIR/tokenizer.model     the SentencePiece model (blank <blk> = 0)
    DIR/tokens.txt          sherpa-onnx token table, "<piece> <id>" per line
    DIR/README.md           model card (YAML front matter + tables)
    DIR/onnx/               optional: the files of an `mlma export` directory

Modules: ``card`` (README.md), ``pack`` (writing), ``load`` (reading, ``hf:`` specs).
Nothing here imports torch at module level, so the ONNX side can use ``load.read_package_config``; tokens.txt is written by ``mlma_cli.export.tokens``.
"""
