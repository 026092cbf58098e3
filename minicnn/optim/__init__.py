"""Optimizers, learning-rate schedules, weight averaging and checkpoints.

    optimizer.py   Optimizer base (parameter groups, state_dict), clip_grad_norm_
    sgd.py         SGD with momentum / Nesterov / weight decay
    adam.py        Adam, AdamW
    rmsprop.py     RMSProp (PyTorch form, and TensorFlow's with tf_style=True)
    schedules.py   StepLR, MultiStepLR, ExponentialLR, CosineAnnealingLR,
                   DecayEveryNEpochs, LinearWarmup
    ema.py         ExponentialMovingAverage of the weights
    checkpoint.py  save_checkpoint / load_checkpoint (.npz, written atomically)
"""
from minicnn.optim.optimizer import Optimizer, clip_grad_norm_
from minicnn.optim.sgd import SGD
from minicnn.optim.adam import Adam, AdamW
from minicnn.optim.rmsprop import RMSProp, RMSprop
from minicnn.optim.schedules import (LRSchedule, StepLR, MultiStepLR, ExponentialLR,
                                     CosineAnnealingLR, DecayEveryNEpochs, LinearWarmup)
from minicnn.optim.ema import ExponentialMovingAverage
from minicnn.optim.checkpoint import save_checkpoint, load_checkpoint
