"""Scoring: WER/CER with alignments, ESPnet tables, bootstrap CIs, icefall-layout files, reports.

    wer.wer_details(refs, hyps, unit="word"|"char") -> WerDetails(total, per_utt, alignments)
    tables.espnet_table(rows) ; bootstrap.bootstrap_ci(errors, ref_lens, seed=0)
    files.write_testset_results(dir, testset, setting, utts)   # recogs-/errs-/wer-summary-/hyps-/results-
    aggregate.score_sets(...)  (`mlma score`) ; report.write_report(exp_dir, out_dir)  (`mlma report`)
"""
