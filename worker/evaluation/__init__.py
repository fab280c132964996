"""Evaluation harnesses behind ``sync-scorer eval-synth`` (issue 2) and ``sync-scorer eval-real``
(issue 3): the numbers the README reports, each from one command.

    metrics.py    pure statistics (AUC, ECE, within +/-1 frame, the in-sync statistic)
    signals.py    pure helpers on LipSyncScores/ClipSummaries -> per-pass records
    degrade.py    pure image degradations for real footage (dark, blur, bar)
    shifts.py     pure audio shifting and mismatched-partner choice
    synthetic.py  eval-synth: fresh synthetic clips through score_clip
    real.py       eval-real: the dev clips, shifted copies, mismatched control, degradations
    cli.py        the two subcommands (plugin of worker.cli)
"""
