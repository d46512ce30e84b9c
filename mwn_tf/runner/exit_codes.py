"""The exit status of `python -m mwn_tf.main`, each with its one-line meaning.

The one place these numbers are defined: the entry point exits with them, its
`--help` text lists them from here (`describe()`), docs/recovery.md
tabulates them (a test checks it), and the tests import them. Every non-zero
status comes with one line on stderr, no traceback.
"""

DONE = 0
NONFINITE = 1
CONFIG = 2
STOPPED = 3
WRITE_FAILED = 4
COLLAPSED = 5
PEER_LOST = 6

MEANINGS = {
    DONE: "done: trained, evaluated, results (and exports) written, or the "
          "run had already finished",
    NONFINITE: "stopped at the first NaN/Inf loss or parameter, without "
               "saving it (the line names the step and the last good "
               "checkpoint)",
    CONFIG: "bad flag, gin file, binding or setting; model_dir unwritable, "
            "holding another experiment, or in use by another run (the line "
            "names the fix; nothing was trained)",
    STOPPED: "stopped by SIGTERM or SIGINT (Ctrl-C) after finishing the "
             "current step and writing a checkpoint; rerun the same command "
             "to resume (a second signal kills at once: 128 + its number)",
    WRITE_FAILED: "a checkpoint, summary, results or export write failed "
                  "(disk full, quota, permissions): the line names the path "
                  "and the free space; the last good checkpoint is kept, so "
                  "free space and rerun the same command",
    COLLAPSED: "stopped because the sample weights collapsed "
               "(train_eval.on_weight_collapse = 'stop'), after writing a "
               "checkpoint: the line says what to change; rerun with it and "
               "the same --model_dir to continue",
    PEER_LOST: "--strategy=multi_worker: another worker died or hung (a "
               "collective failed, or waited longer than "
               "train_eval.collective_timeout_s); stop every worker and "
               "rerun the same command on all of them to resume from the "
               "last checkpoint",
}


def describe(indent: str = "  ") -> str:
  """Every status and its meaning, one per line (for `--help`)."""
  return "\n".join(f"{indent}{code}  {text}"
                   for code, text in sorted(MEANINGS.items()))
