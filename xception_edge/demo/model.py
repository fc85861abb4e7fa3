"""A compact Xception (Chollet 2017) for the demo: same structure, reduced width and depth.

Entry flow: two plain 3x3 convs, then separable-conv blocks whose residual shortcut is a
strided 1x1 conv. Middle flow: residual blocks of three ReLU + SeparableConv + BN. Exit flow:
one more downsampling block, two separable convs, global average pooling, Dense softmax.
Layer names follow ``keras/applications/xception.py`` (``block1_conv1``, ``block2_sepconv1_bn``,
``block13_sepconv2_act``, ``predictions``, ...); middle blocks are numbered from ``block5`` and the
exit flow is always ``block13``/``block14``, as in Keras.
"""

from __future__ import annotations

MIN_INPUT_SIZE = 71  # Keras Xception's minimum; the toolkit refuses smaller inputs


def _bn(layers, name):
    # momentum 0.9 (Keras default 0.99): moving statistics settle within a short training run
    return layers.BatchNormalization(momentum=0.9, name=name)


def _sep(layers, x, filters, name):
    return layers.SeparableConv2D(filters, 3, padding="same", use_bias=False, name=name)(x)


def _down_block(layers, x, block, f1, f2, first_act=True):
    """Two separable convs + max-pool, with a strided 1x1-conv residual shortcut."""
    residual = layers.Conv2D(f2, 1, strides=2, padding="same", use_bias=False, name=f"block{block}_residual")(x)
    residual = _bn(layers, f"block{block}_residual_bn")(residual)
    if first_act:
        x = layers.Activation("relu", name=f"block{block}_sepconv1_act")(x)
    x = _bn(layers, f"block{block}_sepconv1_bn")(_sep(layers, x, f1, f"block{block}_sepconv1"))
    x = layers.Activation("relu", name=f"block{block}_sepconv2_act")(x)
    x = _bn(layers, f"block{block}_sepconv2_bn")(_sep(layers, x, f2, f"block{block}_sepconv2"))
    x = layers.MaxPooling2D(3, strides=2, padding="same", name=f"block{block}_pool")(x)
    return layers.Add(name=f"block{block}_add")([x, residual])


def _entry_flow(layers, inputs, w: int):
    """block1 (two plain 3x3 convs), then the downsampling blocks 2, 3 and 4."""
    x = layers.Conv2D(w, 3, strides=2, use_bias=False, name="block1_conv1")(inputs)
    x = layers.Activation("relu", name="block1_conv1_act")(_bn(layers, "block1_conv1_bn")(x))
    x = layers.Conv2D(2 * w, 3, use_bias=False, name="block1_conv2")(x)
    x = layers.Activation("relu", name="block1_conv2_act")(_bn(layers, "block1_conv2_bn")(x))
    x = _down_block(layers, x, 2, 4 * w, 4 * w, first_act=False)
    x = _down_block(layers, x, 3, 8 * w, 8 * w)
    return _down_block(layers, x, 4, 12 * w, 12 * w)


def _middle_flow(layers, x, w: int, middle_blocks: int):
    """Residual blocks 5.. of three ReLU + SeparableConv + BN each."""
    for block in range(5, 5 + middle_blocks):
        residual = x
        for k in (1, 2, 3):
            x = layers.Activation("relu", name=f"block{block}_sepconv{k}_act")(x)
            x = _bn(layers, f"block{block}_sepconv{k}_bn")(_sep(layers, x, 12 * w, f"block{block}_sepconv{k}"))
        x = layers.Add(name=f"block{block}_add")([x, residual])
    return x


def _exit_flow(layers, x, w: int, num_classes: int):
    """Downsampling block 13, the two separable convs of block14, pooling and the classifier."""
    x = _down_block(layers, x, 13, 12 * w, 16 * w)
    x = layers.SeparableConv2D(24 * w, 3, padding="same", use_bias=False, name="block14_sepconv1")(x)
    x = layers.Activation("relu", name="block14_sepconv1_act")(_bn(layers, "block14_sepconv1_bn")(x))
    x = layers.SeparableConv2D(32 * w, 3, padding="same", use_bias=False, name="block14_sepconv2")(x)
    x = layers.Activation("relu", name="block14_sepconv2_act")(_bn(layers, "block14_sepconv2_bn")(x))
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return layers.Dense(num_classes, activation="softmax", name="predictions")(x)


def build_compact_xception(input_size: int = 96, num_classes: int = 12, width: int = 8, middle_blocks: int = 4):
    """Return an uncompiled ``keras.Model``: (None, s, s, 3) in [-1, 1] -> (None, num_classes) softmax.

    ``width`` is the channel count of ``block1_conv1`` (32 in full Xception); later stages
    scale from it (the middle flow's 12 * width is 728 in full Xception). ``middle_blocks`` is 8
    in full Xception.
    """
    import keras
    from keras import layers

    if input_size < MIN_INPUT_SIZE:
        raise ValueError(f"input_size {input_size} is below Xception's minimum {MIN_INPUT_SIZE}")
    if not 0 <= middle_blocks <= 8:
        raise ValueError("middle_blocks must be between 0 and 8 (block5..block12)")
    inputs = keras.Input(shape=(input_size, input_size, 3), name="input_layer")
    x = _entry_flow(layers, inputs, width)
    x = _middle_flow(layers, x, width, middle_blocks)
    outputs = _exit_flow(layers, x, width, num_classes)
    return keras.Model(inputs, outputs, name="compact_xception")
