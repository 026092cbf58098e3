"""Differentiable operations, one family per file (forward and backward side by side).

    math        add sub mul div neg pow exp log sqrt matmul linear sum mean max var maximum
                where clip
    shape       reshape transpose flatten getitem pad concat split
    activation  relu relu6 leaky_relu sigmoid tanh scaled_tanh silu hard_sigmoid hard_swish
                softmax log_softmax
    loss        cross_entropy nll_loss mse_loss accuracy
    conv        conv2d (dense, grouped, depthwise, dilated, asymmetric)
    pool        max_pool2d avg_pool2d adaptive_avg_pool2d adaptive_max_pool2d global_avg_pool2d
    norm        batch_norm local_response_norm
    dropout     dropout dropout2d drop_path
"""
from minicnn.functional.math import (add, sub, mul, div, neg, pow, exp, log, sqrt, matmul, linear,
                                     sum, mean, max, var, maximum, where, clip, cast)
from minicnn.functional.shape import reshape, transpose, flatten, getitem, pad, concat, split
from minicnn.functional.activation import (relu, relu6, leaky_relu, sigmoid, tanh, scaled_tanh,
                                           silu, swish, hard_sigmoid, hard_swish, softmax,
                                           log_softmax)
from minicnn.functional.loss import (cross_entropy, nll_loss, mse_loss, accuracy,
                                     topk_correct)
from minicnn.functional.conv import conv2d
from minicnn.functional.pool import (max_pool2d, avg_pool2d, adaptive_avg_pool2d,
                                     adaptive_max_pool2d, global_avg_pool2d)
from minicnn.functional.resample import upsample_nearest2d, max_pool2d_same
from minicnn.functional.norm import batch_norm, local_response_norm
from minicnn.functional.dropout import dropout, dropout2d, drop_path
