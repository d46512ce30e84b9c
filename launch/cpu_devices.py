"""Runs `mwn_tf.main` with the CPU split into N logical devices.

A dry run of the multi-device path on a machine without GPUs:

    python launch/cpu_devices.py 2 --gin_file=gin/smoke.gin --strategy=mirrored

MirroredStrategy then mirrors the model on 2 CPU "devices" (see
`mwn_tf.runner.strategy.get_strategy`), so the cross-replica code runs for real;
it is no faster than one device. The split must happen before TensorFlow
initialises its devices, hence this wrapper instead of a flag.
"""

import os
import sys

import tensorflow as tf

# Run as a script, so put the repository (not launch/) on the path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
  if len(sys.argv) < 2 or not sys.argv[1].isdigit() or int(sys.argv[1]) < 1:
    raise SystemExit("usage: python launch/cpu_devices.py N [mwn_tf.main "
                     "flags...]   (N >= 1 logical CPU devices)")
  n = int(sys.argv.pop(1))
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration()] * n)
  from mwn_tf import main as mwn_main  # pylint: disable=g-import-not-at-top
  mwn_main.run()


if __name__ == "__main__":
  main()
