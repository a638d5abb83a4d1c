"""Optimizers that update a model's parameters in place from its gradients.

SGD with momentum is the paper's choice (sec. 3: momentum 0.99, batch of one large tile, so that
many previously seen samples determine each update). Adam is offered as an option.
Both take `weight_decay` (L2, added to the gradient) and expose state_dict / load_state_dict so a
checkpoint can resume a run exactly. EMA keeps a moving average of the parameters beside them.
The update rules themselves are tinyunet/ops/updates.py, run on the model's engine (on the CPU
their one-pass Numba twins, kernels/updates.py, with the same numbers).
"""
import contextlib
from collections import OrderedDict

from . import backend


def _follow(owner, buffers):
    """Move an optimizer's (or an EMA's) buffers to its model's device if the model moved
    since they were made (model.to)."""
    if owner.device != owner.model.device:
        for d in buffers:
            for k in d:
                d[k] = backend.to_device(d[k], owner.model.device)
        owner.device = owner.model.device


class _Optimizer:
    def __init__(self, model, lr, weight_decay):
        if lr <= 0:
            raise ValueError(f"learning rate must be > 0, got {lr}")
        self.model, self.lr, self.weight_decay = model, lr, weight_decay
        self.steps = 0
        self.device = model.device            # where the buffers are

    def _buffers(self):
        return {}

    def _follow_the_model(self):
        _follow(self, self._buffers().values())

    def state_dict(self):
        """Hyper-parameters, step count and per-parameter buffers (as NumPy arrays)."""
        bufs = {b: OrderedDict((k, backend.to_numpy(v)) for k, v in d.items())
                for b, d in self._buffers().items()}
        return dict(lr=self.lr, weight_decay=self.weight_decay, steps=self.steps, buffers=bufs)

    def load_state_dict(self, state):
        self._follow_the_model()
        self.lr, self.weight_decay, self.steps = state["lr"], state["weight_decay"], state["steps"]
        for b, d in self._buffers().items():
            for k in d:
                d[k][...] = backend.to_device(state["buffers"][b][k], self.model.device)


class SGD(_Optimizer):
    """v <- momentum * v - lr * g;  param <- param + v   (paper: momentum = 0.99)."""

    def __init__(self, model, lr=0.01, momentum=0.99, weight_decay=0.0):
        super().__init__(model, lr, weight_decay)
        self.momentum = momentum
        self.velocity = OrderedDict((k, v * 0) for k, v in model.params.items())

    def _buffers(self):
        return {"velocity": self.velocity}

    def step(self):
        self._follow_the_model()
        grads, sgd = self.model.grads(), self.model.engine.updates.sgd
        for name, p in self.model.params.items():
            sgd(p, grads[name], self.velocity[name], self.lr, self.momentum, self.weight_decay)
        self.steps += 1


class Adam(_Optimizer):
    """Adam (Kingma and Ba, 2015) with bias correction."""

    def __init__(self, model, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(model, lr, weight_decay)
        self.betas, self.eps = betas, eps
        self.m = OrderedDict((k, v * 0) for k, v in model.params.items())
        self.v = OrderedDict((k, v * 0) for k, v in model.params.items())

    def _buffers(self):
        return {"m": self.m, "v": self.v}

    def step(self):
        self._follow_the_model()
        self.steps += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1 ** self.steps, 1 - b2 ** self.steps
        grads, adam = self.model.grads(), self.model.engine.updates.adam
        for name, p in self.model.params.items():
            adam(p, grads[name], self.m[name], self.v[name], self.lr, b1, b2, c1, c2, self.eps,
                 self.weight_decay)


class EMA:
    """An exponential moving average of a model's parameters (Polyak averaging).

        a <- d_t * a + (1 - d_t) * p    after every optimizer step,
        d_t = min(decay, (1 + t) / (10 + t))

    t counts the updates so far. The ramp d_t (as in TensorFlow's ExponentialMovingAverage with
    num_updates) keeps the first steps from being dominated by the initial weights: with decay
    0.999 the average covers about the last 1000 steps once t passes 9000, the last t/10 or so
    before. The average is what a run validates and ships when it is on (train.Trainer), while
    the optimizer keeps stepping the raw parameters; averaging smooths the step-to-step jitter
    of the weights that a single late checkpoint carries.
    """

    def __init__(self, model, decay=0.999):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.model, self.decay, self.updates = model, decay, 0
        self.average = OrderedDict((k, v.copy()) for k, v in model.params.items())
        self.device = model.device

    def update(self):
        _follow(self, [self.average])
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        ema = self.model.engine.updates.ema
        for name, p in self.model.params.items():
            ema(self.average[name], p, d)
        self.updates += 1

    @contextlib.contextmanager
    def applied(self):
        """The model with the averaged parameters inside the block, its own after."""
        _follow(self, [self.average])
        own = OrderedDict((k, v.copy()) for k, v in self.model.params.items())
        self.model.load_state_dict(self.average)
        try:
            yield self.model
        finally:
            self.model.load_state_dict(own)

    def state_dict(self):
        return dict(decay=self.decay, updates=self.updates,
                    average=OrderedDict((k, backend.to_numpy(v)) for k, v in self.average.items()))

    def load_state_dict(self, state):
        _follow(self, [self.average])
        self.decay, self.updates = state["decay"], state["updates"]
        for k, v in self.average.items():
            v[...] = backend.to_device(state["average"][k], self.model.device)
