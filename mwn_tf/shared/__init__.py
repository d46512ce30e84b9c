"""What a running run and the analysis of a finished one both use.

  samples   the one per-sample loss -> weight pass (the runner's monitor every
            few epochs and at the end; the analysis on checkpoints, exports
            or new data).
  figures   the paper's figures, built once, rendered as PNG files (the
            analysis) or TensorBoard images (the runner's monitor).

Why a floor of its own: the runner draws these while it trains and the
analysis reads the runner's model_dir (`runner.run_dir`) and restores its
checkpoints, so the analysis sits above the runner; what both need lives
here, below both, and imports neither. The floors are kept by
tests/test_import_floors.py.
"""
