"""Per-example image preprocessing (train augmentation and eval transforms).

Every train-side function takes `(image, seed)` with `seed` a [2] int64
stateless seed, so augmentation is reproducible and safe under parallel map.
"""

import tensorflow as tf

# CIFAR per-channel statistics as used by the MW-Net code (x / 255).
CIFAR_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# `cifar_eval` in words, for exports.
CIFAR_EVAL = ("uint8 RGB pixels -> pixel / 255, then per channel (x - mean) / "
              "std with mean (125.3, 123.0, 113.9) / 255 and std "
              "(63.0, 62.1, 66.7) / 255")


def normalize(image: tf.Tensor, mean, std) -> tf.Tensor:
  """(image - mean) / std per channel; image float32 [H, W, C] in [0, 1]."""
  return (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def to_unit(image: tf.Tensor) -> tf.Tensor:
  """uint8 [0, 255] -> float32 [0, 1]; float inputs pass through."""
  if image.dtype == tf.uint8:
    return tf.cast(image, tf.float32) / 255.0
  return tf.cast(image, tf.float32)


def pad_crop_flip(image: tf.Tensor, seed: tf.Tensor, pad: int = 4) -> tf.Tensor:
  """Reflect-pad `pad`, random crop back to [H, W], random horizontal flip.

  Args:
    image: float32 [H, W, C].
    seed: [2] int64 stateless seed.
    pad: pixels of reflection padding on each side.

  Returns:
    float32 [H, W, C].
  """
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(
      seed, num=2))
  padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
  image = tf.image.stateless_random_crop(padded, tf.shape(image), crop_seed)
  return tf.image.stateless_random_flip_left_right(image, flip_seed)


def cifar_train(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """The paper's CIFAR augmentation: pad 4 (reflect), crop 32, flip, normalise.

  Args:
    image: uint8 [32, 32, 3].
    seed: [2] int64.

  Returns:
    float32 [32, 32, 3], per-channel standardised.
  """
  return normalize(pad_crop_flip(to_unit(image), seed), CIFAR_MEAN, CIFAR_STD)


def cifar_eval(image: tf.Tensor) -> tf.Tensor:
  """uint8 [32, 32, 3] -> float32 [32, 32, 3], standardised, no augmentation."""
  return normalize(to_unit(image), CIFAR_MEAN, CIFAR_STD)


def decode_jpeg(image_bytes: tf.Tensor) -> tf.Tensor:
  """JPEG bytes -> float32 [h, w, 3] in [0, 1] (grey/CMYK forced to RGB)."""
  image = tf.io.decode_jpeg(image_bytes, channels=3,
                            dct_method="INTEGER_ACCURATE")
  return tf.image.convert_image_dtype(image, tf.float32)


def resize_shorter_side(image: tf.Tensor, size: int) -> tf.Tensor:
  """Bilinear resize so that min(h, w) == size, keeping the aspect ratio."""
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  scale = tf.cast(size, tf.float32) / tf.reduce_min(shape)
  new_hw = tf.cast(tf.math.ceil(shape * scale), tf.int32)
  new_hw = tf.maximum(new_hw, size)  # ceil round-off must not undershoot.
  return tf.image.resize(image, new_hw, method="bilinear", antialias=True)


def resize_centre_crop(images: tf.Tensor, height: int,
                       width: int) -> tf.Tensor:
  """Resizes to cover height x width and keeps the centre: for a square
  target, `resize_shorter_side` followed by a centre crop, as the
  variable-size datasets' evaluation does (bilinear, antialiased).

  Args:
    images: float32 [b, h, w, C].
    height, width: the size wanted.

  Returns:
    float32 [b, height, width, C].
  """
  size = tf.constant([height, width], tf.int32)
  shape = tf.cast(tf.shape(images)[1:3], tf.float32)
  scale = tf.reduce_max(tf.cast(size, tf.float32) / shape)
  new_hw = tf.maximum(tf.cast(tf.math.ceil(shape * scale), tf.int32), size)
  images = tf.image.resize(images, new_hw, method="bilinear", antialias=True)
  top, left = tf.unstack((new_hw - size) // 2)
  return images[:, top:top + height, left:left + width, :]


def resnet_train(image_bytes: tf.Tensor, seed: tf.Tensor, image_size: int = 224,
                 resize_size: int = 256) -> tf.Tensor:
  """Standard ResNet-50 train transform for Clothing1M.

  Resize the shorter side to `resize_size`, random `image_size` square crop,
  random horizontal flip, ImageNet mean/std.

  Args:
    image_bytes: scalar string, a JPEG.
    seed: [2] int64.
    image_size: crop size.
    resize_size: shorter side after resizing.

  Returns:
    float32 [image_size, image_size, 3].
  """
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(
      seed, num=2))
  image = resize_shorter_side(decode_jpeg(image_bytes), resize_size)
  image = tf.image.stateless_random_crop(image, [image_size, image_size, 3],
                                         crop_seed)
  image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  return normalize(image, IMAGENET_MEAN, IMAGENET_STD)


def resnet_eval(image: tf.Tensor, image_size: int = 224,
                resize_size: int = 256) -> tf.Tensor:
  """Resize shorter side to `resize_size`, centre crop, ImageNet mean/std.

  Args:
    image: scalar string (a JPEG, as training reads it) or its decoded
      uint8 pixels [h, w, 3] (what an export's raw-image signature gets).
    image_size: crop size.
    resize_size: shorter side after resizing.

  Returns:
    float32 [image_size, image_size, 3].
  """
  if image.dtype == tf.string:
    image = decode_jpeg(image)
  else:  # As decode_jpeg scales its pixels, bit for bit.
    image = tf.image.convert_image_dtype(image, tf.float32)
  image = resize_shorter_side(image, resize_size)
  hw = tf.shape(image)[:2]
  top = (hw[0] - image_size) // 2
  left = (hw[1] - image_size) // 2
  image = image[top:top + image_size, left:left + image_size, :]
  image = tf.ensure_shape(image, [image_size, image_size, 3])
  return normalize(image, IMAGENET_MEAN, IMAGENET_STD)


def resnet_eval_description(image_size: int = 224,
                            resize_size: int = 256) -> str:
  """`resnet_eval` in words, for exports."""
  return (f"JPEG (or uint8 RGB pixels) -> pixel / 255, shorter side resized "
          f"to {resize_size} (bilinear, antialiased), centre "
          f"{image_size}x{image_size} crop, then per channel (x - mean) / std "
          f"with ImageNet mean {IMAGENET_MEAN} and std {IMAGENET_STD}")
