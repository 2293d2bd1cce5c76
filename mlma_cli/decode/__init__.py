"""Decoding: CTC greedy / prefix beam search, WFST graphs (kaldifst + kaldilm) decoded with kaldi-decoder or k2,
the batched test-set runner and `mlma transcribe`.

    greedy.ctc_greedy(log_probs (B, T, V), lens) -> List[List[int]]
    prefix_beam.ctc_prefix_beam(log_probs (T, V), beam) -> List[int]; ctc_prefix_beam_batch(...)
    lm.write_arpa(sentences, path, order)            # interpolated Kneser-Ney n-gram -> ARPA
    wfst.build_graph(arpa, spell, vocab_size, out_dir) / load_graph(dir) / KaldiWfstDecoder(graph).decode(lp)
    k2_backend.K2Decoder(graph, device).decode(log_probs (B, T, V), lens)
    runner.run_decode(inference, data_dir, test_sets, DecodeOptions, out_dir)
    transcribe.transcribe_files(inference, paths, opts) / transcribe_arrays(inference, arrays, opts) -> Transcript(s)
      results (Transcript -> Segment -> Word -> Token, times + confidences), timestamps (CTC alignment -> times),
      segment (silero-vad / fixed windows), audio_inputs (files, dirs, @lists, manifests), outputs (txt/json/tsv/srt/vtt)
"""
