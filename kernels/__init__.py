"""tinyunet's speed code: Numba kernels with plain signatures (arrays in, arrays out), each
tested against a readable or slow reference. Installed as `tinyunet.kernels`.

    conv_relu    3x3 conv + bias + ReLU, direct (no column matrix): the twin of
                 tinyunet.ops.conv3x3_relu
    simd         a 256-bit vector type for Numba (the register tiles of conv_relu)
    pool         2x2 max pooling: the twin of tinyunet.ops.max_pool2x2
    up_conv      2x2 up-convolution: the twin of tinyunet.ops.up_conv2x2
    concat       centre crop and concatenation: the twin of tinyunet.ops.crop_and_concat
    updates      SGD, Adam and the moving average in one pass: the twin of tinyunet.ops.updates
    threads      one fork/join per layer, BLAS held to one thread, no number thread-dependent
    elastic      elastic deformation of training tiles (paper sec. 3.1)
    weight_map   the loss weight map (paper eq. 2)
    warping      the warping error's simple-point warp and mismatch classification
    thinning     border thinning for V_rand and V_info
"""
