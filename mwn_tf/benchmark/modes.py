"""Benchmark modes: "+"-joined tokens naming a MetaWeightModel variant (see
`TOKENS_HELP`), e.g. "exact+xla", "last1+interval2", "exact+meta25"."""

import dataclasses
from typing import List, Optional

TOKENS_HELP = """\
  plain        method="baseline": the plain step, through the same model.
  exact        MW-Net, every option at its exact default.
  interval<k>  meta_interval=k: stages 1-2 every k steps.
  last<k>      virtual_layers=k: the virtual step moves the last k layers.
  fd           hypergradient="finite_difference": no second-order pass.
  warm<n>      exact_warmup_steps=n: the first n steps exact (a bench of a
               few steps times the warm-up, not the fast phase).
  recommended  fast_mode="recommended": the one switch.
  meta<m>      a meta batch of m samples (data option `meta_batch_size`).
  xla          compile(jit_compile=True).
  bf16, fp16   mixed_bfloat16 / mixed_float16 classifier (fp16 with loss
               scaling, as Keras does by default).
  kerasbn      the registry model with Keras' BatchNormalization instead of
               mwn_tf's MetaBatchNormalization (same values, autodiff
               second derivative).
e.g. "exact+xla", "last1+interval2", "exact+meta25".
"""

_TOKENS = ("plain", "exact", "interval<k>", "last<k>", "fd", "warm<n>",
           "recommended", "meta<m>", "xla", "bf16", "fp16", "kerasbn")


@dataclasses.dataclass
class Mode:
  """What one benchmark mode builds.

  Attributes:
    name: The mode string, e.g. "last1+interval2".
    model_kwargs: Keyword arguments for `MetaWeightModel`.
    compile_kwargs: Keyword arguments for `MetaWeightModel.compile`.
    meta_batch_size: Meta batch size, or None for the train batch size.
    dtype: Classifier dtype policy name, or None for float32.
    keras_bn: Build the classifier with Keras' BatchNormalization instead of
      `MetaBatchNormalization`.
  """
  name: str
  model_kwargs: dict
  compile_kwargs: dict
  meta_batch_size: Optional[int] = None
  dtype: Optional[str] = None
  keras_bn: bool = False


def parse_mode(name: str) -> Mode:
  """Parses a mode string (see the module docstring).

  Args:
    name: "+"-joined tokens.

  Returns:
    The `Mode`.

  Raises:
    ValueError: an unknown token, or "plain" joined with MW-Net options.
  """
  mode = Mode(name, {}, {})
  tokens = name.split("+")
  for token in tokens:
    if token == "plain":
      mode.model_kwargs["method"] = "baseline"
    elif token == "exact":
      pass
    elif token == "xla":
      mode.compile_kwargs["jit_compile"] = True
    elif token == "kerasbn":
      mode.keras_bn = True
    elif token in ("bf16", "fp16"):
      mode.dtype = {"bf16": "mixed_bfloat16", "fp16": "mixed_float16"}[token]
    elif token.startswith("interval") and token[8:].isdigit():
      mode.model_kwargs["meta_interval"] = int(token[8:])
    elif token.startswith("last") and token[4:].isdigit():
      mode.model_kwargs["virtual_layers"] = int(token[4:])
    elif token == "fd":
      mode.model_kwargs["hypergradient"] = "finite_difference"
    elif token.startswith("warm") and token[4:].isdigit():
      mode.model_kwargs["exact_warmup_steps"] = int(token[4:])
    elif token == "recommended":
      mode.model_kwargs["fast_mode"] = "recommended"
    elif token.startswith("meta") and token[4:].isdigit():
      mode.meta_batch_size = int(token[4:])
    else:
      raise ValueError(f"Unknown benchmark mode token {token!r} in {name!r}; "
                       f"tokens are {', '.join(_TOKENS)}, joined with '+'.")
  if mode.model_kwargs.get("method") == "baseline" and (
      set(mode.model_kwargs) - {"method"} or mode.meta_batch_size):
    raise ValueError(f"{name!r}: 'plain' takes no MW-Net options.")
  return mode



def describe(mode: str) -> str:
  """The constructor/compile options a mode string stands for."""
  m = parse_mode(mode)
  parts = [f"{k}={v!r}" for k, v in m.model_kwargs.items()]
  parts += [f"{k}={v!r}" for k, v in m.compile_kwargs.items()]
  if m.meta_batch_size:
    parts.append(f"meta_batch_size={m.meta_batch_size}")
  if m.dtype:
    parts.append(f"dtype={m.dtype!r}")
  if m.keras_bn:
    parts.append("Keras BatchNormalization")
  return ", ".join(parts) or "(defaults)"



def gin_bindings(mode: str, model: str = "mlp") -> List[str]:
  """The runner's gin bindings (`mwn_tf.main --gin_param`) for a mode."""
  m = parse_mode(mode)
  out = [f"train_eval.{k} = {v!r}" for k, v in m.model_kwargs.items()]
  if m.compile_kwargs.get("jit_compile"):
    out.append("train_eval.jit_compile = True")
  if m.meta_batch_size:
    out.append(f"train_eval.meta_batch_size = {m.meta_batch_size}")
  if m.dtype:
    out.append(f"{model}.dtype = {m.dtype!r}")
  return out

