"""Run folders written by hand in the runner's file formats, for the
analysis tests (tests/analysis/): no training needed."""

import json
import os

import numpy as np
import tensorflow as tf


def write_run(model_dir, *, n=400, noise=0.4, units=(100,), method="mwn",
              acc=0.9, history=True, events=False, seed=0):
  """Writes a run folder as mwn_tf.train writes it (samples, results,
  weight curve; TensorBoard scalars if `events`) with `n` samples, a share
  `noise` of them mislabelled. Returns the arrays written: {"label",
  "clean", "loss", "weight"}, each [n]."""
  os.makedirs(model_dir, exist_ok=True)
  rng = np.random.default_rng(seed)
  clean = rng.integers(0, 5, n)
  noisy = rng.random(n) < noise
  label = np.where(noisy, (clean + rng.integers(1, 5, n)) % 5, clean)
  loss = np.where(noisy, rng.gamma(4.0, 1.0, n), rng.gamma(1.0, 0.4, n))
  weight = 1 / (1 + np.exp(2 * (loss - 2)))
  np.savez(os.path.join(model_dir, "sample_weights.npz"),
           index=np.arange(n) * 2, label=label.astype(np.int32),
           clean_label=clean.astype(np.int32), is_noisy=label != clean,
           loss=loss.astype(np.float32), weight=weight.astype(np.float32))
  records = [{"epoch": e + 1, "step": 10 * (e + 1),
              "train": {"weight_clean": 0.5 + 0.02 * e,
                        "weight_noisy": 0.5 - 0.04 * e},
              "test": {"accuracy": acc}} for e in range(6)]
  results = {"method": method, "dataset": "digits", "model": "mlp",
             "seed": seed, "realised_noise_rate": float((label != clean).mean()),
             "final_epoch_test_accuracy": acc - 0.01,
             "best_epoch_test_accuracy": acc,
             "data": {"noise_type": "uniform", "noise_rate": noise},
             "hparams": {"weight_net_hidden_units": ",".join(map(str, units))},
             "history": records if history else []}
  with open(os.path.join(model_dir, "results.json"), "w") as f:
    json.dump(results, f)
  with open(os.path.join(model_dir, "weight_curve.csv"), "w") as f:
    f.write("loss,weight\n" + "".join(
        f"{l:g},{1 / (1 + np.exp(2 * (l - 2))):g}\n"
        for l in np.linspace(0, 10, 21)))
  if events:
    writer = tf.summary.create_file_writer(model_dir)
    with writer.as_default():
      for step in (10, 20, 30):
        tf.summary.scalar("train/weight_clean", 0.5 + step / 100, step=step)
        tf.summary.scalar("train/weight_noisy", 0.5 - step / 100, step=step)
    writer.close()
  return {"label": label, "clean": clean, "loss": loss, "weight": weight}
