#!/usr/bin/env python3
"""Writes the PyTorch parity fixtures that tests/test_pytorch_parity.cpp compares against.

Every fixture is a small safetensors file (8-byte little-endian header length, JSON header,
raw little-endian float32 data; parameters of a case in "__metadata__" as JSON strings), so
the C++ side reads them with nlohmann-json and a memcpy.

  tests/fixtures/parity_ops.safetensors
      conv2d and conv_transpose2d (forward; gradients of input, weight, bias; several
      geometries), batch_norm (training: output, gradients, updated running statistics;
      eval: output), leaky_relu / relu / tanh / sigmoid, BCELoss (incl. predictions at and
      near 0 and 1), L1Loss, MSELoss, and three Adam steps. Gradients are taken of
      mse_loss(op(...), target) with a random target, which C++ writes with the same ops.
  tests/fixtures/parity_tiny_model.safetensors
      The official generator and discriminator at isize 32, nc 1, ngf = ndf = 4, nz = 8:
      initial weights and running statistics, train-mode and eval-mode forward outputs, and
      one complete official training step on a batch of 4 (losses, the gradients both
      optimisers stepped with, updated weights and running statistics).
  tests/fixtures/parity_tiny_trajectory.safetensors
      The same tiny networks through six consecutive official training steps on six
      batches: the losses of every step and the weights and running statistics after the
      last (what one step cannot show: Adam state and statistics carried between steps).
  tests/fixtures/parity_state_dict.json
      Names, shapes and kinds of every state-dict entry of the full-size networks
      (isize 32, nc 3, ngf = ndf = 64, nz = 100) and their parameter counts.
  tests/fixtures/converted_tiny.safetensors, tests/fixtures/converted_tiny_scores.safetensors
      A tiny official-format netG.pth / netD.pth pair (written to a temporary folder)
      converted by scripts/convert_official_weights.py, and the eval-mode anomaly scores
      0.9 * mean((x - G(x))^2) + 0.1 * mean((f(x) - f(G(x)))^2) of a few random images.

The networks below are the official modules (lib/models/networks.py: UnetGenerator /
UnetSkipConnectionBlock from pix2pix, NetDv2) written out again so that this script needs
nothing but torch and numpy. All inputs are seeded; the reference numbers are PyTorch's own
float32 results. The script also reruns the whole-model cases in float64 and prints how far
float32 PyTorch is from them: the noise floor the C++ tolerances are reasoned against.

Run with the system Python (Debian python3-torch):  /usr/bin/python3 scripts/make_fixtures.py
"""
import copy
import json
import os
import subprocess
import sys
import tempfile
from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convert_official_weights import safetensors_bytes  # noqa: E402

torch.set_num_threads(2)


# ---- the official networks ----------------------------------------------------------------

class UnetSkipConnectionBlock(nn.Module):
    """pix2pix's block as the official code uses it (BatchNorm2d, so no conv biases but the last)."""

    def __init__(self, outer_nc, inner_nc, input_nc=None, submodule=None, outermost=False, innermost=False):
        super().__init__()
        self.outermost = outermost
        use_bias = False  # norm_layer is BatchNorm2d
        if input_nc is None:
            input_nc = outer_nc
        downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
        downrelu = nn.LeakyReLU(0.2, True)
        downnorm = nn.BatchNorm2d(inner_nc)
        uprelu = nn.ReLU(True)
        upnorm = nn.BatchNorm2d(outer_nc)
        if outermost:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1)
            model = [downconv, submodule, uprelu, upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
            model = [downrelu, downconv, uprelu, upconv, upnorm]
        else:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
            model = [downrelu, downconv, downnorm, submodule, uprelu, upconv, upnorm]
        self.model = nn.Sequential(*model)

    def forward(self, x):
        if self.outermost:
            return self.model(x)
        # The in-place LeakyReLU at the head of self.model rewrites x first: the skip
        # connection carries LeakyReLU(x), as in the official code.
        return torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    def __init__(self, input_nc, output_nc, num_downs, ngf):
        super().__init__()
        block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, innermost=True)
        for _ in range(num_downs - 5):
            block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, submodule=block)
        block = UnetSkipConnectionBlock(ngf * 4, ngf * 8, submodule=block)
        block = UnetSkipConnectionBlock(ngf * 2, ngf * 4, submodule=block)
        block = UnetSkipConnectionBlock(ngf, ngf * 2, submodule=block)
        block = UnetSkipConnectionBlock(output_nc, ngf, input_nc=input_nc, submodule=block, outermost=True)
        self.model = block

    def forward(self, x):
        return self.model(x)


class NetDv2(nn.Module):
    def __init__(self, isize, nz, nc, ndf):
        super().__init__()
        feat = nn.Sequential()
        clas = nn.Sequential()
        feat.add_module('initial-conv-{0}-{1}'.format(nc, ndf), nn.Conv2d(nc, ndf, 4, 2, 1, bias=False))
        feat.add_module('initial-relu-{0}'.format(ndf), nn.LeakyReLU(0.2, inplace=True))
        csize, cndf = isize / 2, ndf
        while csize > 4:
            in_feat, out_feat = cndf, cndf * 2
            feat.add_module('pyramid-{0}-{1}-conv'.format(in_feat, out_feat), nn.Conv2d(in_feat, out_feat, 4, 2, 1, bias=False))
            feat.add_module('pyramid-{0}-batchnorm'.format(out_feat), nn.BatchNorm2d(out_feat))
            feat.add_module('pyramid-{0}-relu'.format(out_feat), nn.LeakyReLU(0.2, inplace=True))
            cndf, csize = cndf * 2, csize / 2
        feat.add_module('final-{0}-{1}-conv'.format(cndf, 1), nn.Conv2d(cndf, nz, 4, 1, 0, bias=False))
        clas.add_module('classifier', nn.Conv2d(nz, 1, 3, 1, 1, bias=False))
        clas.add_module('Sigmoid', nn.Sigmoid())
        self.feat = feat
        self.clas = clas

    def forward(self, x):
        feat = self.feat(x)
        clas = self.clas(feat)
        return clas.view(-1, 1).squeeze(1), feat


def make_networks(isize, nc, ngf, ndf, nz):
    return UnetGenerator(nc, nc, int(np.log2(isize)), ngf), NetDv2(isize, nz, nc, ndf)


def init_dcgan(net, generator, perturb_biases):
    """init_weights('normal', 0.02) / weights_init: conv weights N(0, 0.02), batch-norm weights
    N(1, 0.02), biases 0. With perturb_biases the biases get N(0, 0.05) instead, so that the
    fixtures exercise the bias paths (a zero bias hides a bias that is added twice or never)."""
    for m in net.modules():
        name = m.__class__.__name__
        if name.find('Conv') != -1:
            m.weight.data.normal_(0.0, 0.02, generator=generator)
            if m.bias is not None:
                if perturb_biases:
                    m.bias.data.normal_(0.0, 0.05, generator=generator)
                else:
                    m.bias.data.zero_()
        elif name.find('BatchNorm') != -1:
            m.weight.data.normal_(1.0, 0.02, generator=generator)
            if perturb_biases:
                m.bias.data.normal_(0.0, 0.05, generator=generator)
            else:
                m.bias.data.zero_()


def warm_running_statistics(netg, netd, x):
    """Running statistics that are not the fresh 0 / 1: one train-mode pass with momentum 1
    makes them the (unbiased) statistics of batch x, so eval-mode outputs depend on them."""
    norms = [m for m in list(netg.modules()) + list(netd.modules()) if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.momentum = 1.0
    netg.train()
    netd.train()
    with torch.no_grad():
        netg(x)
        netd(x)
    for m in norms:
        m.momentum = 0.1


def state_arrays(prefix, net, include_tracked=False):
    out = []
    for key, value in net.state_dict().items():
        if key.endswith("num_batches_tracked") and not include_tracked:
            continue
        out.append((prefix + key, value.detach().cpu().numpy().astype(np.float32)))
    return out


def f32(t):
    return t.detach().cpu().numpy().astype(np.float32)


def write(path, tensors, metadata):
    data = safetensors_bytes(tensors, OrderedDict((k, v if isinstance(v, str) else json.dumps(v))
                                                  for k, v in metadata.items()))
    with open(path, "wb") as f:
        f.write(data)
    print(f"wrote {os.path.relpath(path, ROOT)}: {len(tensors)} tensors, {len(data)} bytes")


# ---- op cases ------------------------------------------------------------------------------

class OpCases:
    def __init__(self, seed):
        self.generator = torch.Generator().manual_seed(seed)
        self.tensors = []
        self.cases = []

    def uniform(self, *shape, low=-1.0, high=1.0):
        return torch.rand(*shape, generator=self.generator) * (high - low) + low

    def normal(self, *shape, std=1.0):
        return torch.randn(*shape, generator=self.generator) * std

    def add(self, name, op, params, **tensors):
        self.cases.append(OrderedDict([("name", name), ("op", op), ("params", params)]))
        for field, value in tensors.items():
            if value is not None:
                self.tensors.append((f"{name}.{field}", f32(value)))

    @staticmethod
    def leaf(t):
        return t.clone().requires_grad_(True)

    def conv2d(self, name, n, cin, h, w, cout, k, stride, padding, bias):
        x, weight = self.leaf(self.uniform(n, cin, h, w)), self.leaf(self.normal(cout, cin, k, k, std=0.3))
        b = self.leaf(self.normal(cout, std=0.5)) if bias else None
        y = F.conv2d(x, weight, b, stride=stride, padding=padding)
        target = self.normal(*y.shape)
        loss = F.mse_loss(y, target)
        loss.backward()
        self.add(name, "conv2d", {"stride": stride, "padding": padding, "bias": bias},
                 input=x, weight=weight, bias=b, target=target, output=y, loss=loss.reshape(1),
                 grad_input=x.grad, grad_weight=weight.grad, grad_bias=None if b is None else b.grad)

    def conv_transpose2d(self, name, n, cin, h, w, cout, k, stride, padding, bias):
        x, weight = self.leaf(self.uniform(n, cin, h, w)), self.leaf(self.normal(cin, cout, k, k, std=0.3))
        b = self.leaf(self.normal(cout, std=0.5)) if bias else None
        y = F.conv_transpose2d(x, weight, b, stride=stride, padding=padding)
        target = self.normal(*y.shape)
        loss = F.mse_loss(y, target)
        loss.backward()
        self.add(name, "conv_transpose2d", {"stride": stride, "padding": padding, "bias": bias},
                 input=x, weight=weight, bias=b, target=target, output=y, loss=loss.reshape(1),
                 grad_input=x.grad, grad_weight=weight.grad, grad_bias=None if b is None else b.grad)

    def batch_norm_training(self, name, n, c, h, w):
        # A non-zero mean and a spread other than 1, so normalisation does something.
        x = self.leaf(self.normal(n, c, h, w, std=1.7) + self.normal(1, c, 1, 1, std=2.0))
        weight, bias = self.leaf(1.0 + self.normal(c, std=0.3)), self.leaf(self.normal(c, std=0.5))
        running_mean, running_var = self.normal(c, std=0.5), self.uniform(c, low=0.5, high=2.0)
        rm, rv = running_mean.clone(), running_var.clone()
        y = F.batch_norm(x, rm, rv, weight, bias, training=True, momentum=0.1, eps=1e-5)
        target = self.normal(*y.shape)
        loss = F.mse_loss(y, target)
        loss.backward()
        self.add(name, "batch_norm_training", {"momentum": 0.1, "epsilon": 1e-5},
                 input=x, weight=weight, bias=bias, running_mean=running_mean, running_var=running_var,
                 target=target, output=y, loss=loss.reshape(1), grad_input=x.grad, grad_weight=weight.grad,
                 grad_bias=bias.grad, updated_running_mean=rm, updated_running_var=rv)

    def batch_norm_eval(self, name, n, c, h, w):
        x = self.normal(n, c, h, w, std=1.5) + 0.3
        weight, bias = 1.0 + self.normal(c, std=0.3), self.normal(c, std=0.5)
        running_mean, running_var = self.normal(c, std=0.5), self.uniform(c, low=0.5, high=2.0)
        y = F.batch_norm(x, running_mean, running_var, weight, bias, training=False, momentum=0.1, eps=1e-5)
        self.add(name, "batch_norm_eval", {"momentum": 0.1, "epsilon": 1e-5},
                 input=x, weight=weight, bias=bias, running_mean=running_mean, running_var=running_var, output=y)

    def activation(self, name, op, fn, shape):
        raw = self.normal(*shape, std=2.0)
        # Keep every input clear of 0, where ReLU's derivative is a convention.
        raw = torch.where(raw.abs() < 1e-2, torch.full_like(raw, 0.5), raw)
        x = self.leaf(raw)
        y = fn(x)
        target = self.normal(*y.shape)
        loss = F.mse_loss(y, target)
        loss.backward()
        self.add(name, op, {}, input=x, target=target, output=y, loss=loss.reshape(1), grad_input=x.grad)

    def bce(self, name, predictions, targets):
        p = self.leaf(torch.tensor(predictions, dtype=torch.float32))
        t = torch.tensor(targets, dtype=torch.float32)
        loss = nn.BCELoss()(p, t)
        loss.backward()
        self.add(name, "bce_loss", {}, prediction=p, target=t, loss=loss.reshape(1), grad_prediction=p.grad)

    def pairwise(self, name, op, fn, shape):
        a, b = self.leaf(self.normal(*shape)), self.leaf(self.normal(*shape))
        loss = fn(a, b)
        loss.backward()
        self.add(name, op, {}, a=a, b=b, loss=loss.reshape(1), grad_a=a.grad, grad_b=b.grad)

    def adam(self, name, n, steps):
        p = nn.Parameter(self.normal(n, std=0.1))
        initial = p.detach().clone()
        opt = torch.optim.Adam([p], lr=2e-4, betas=(0.5, 0.999))
        fields = OrderedDict(initial=initial)
        for step in range(1, steps + 1):
            # Gradients of mixed sizes; one element gets no gradient at the second step.
            g = self.normal(n) * torch.logspace(-3, 1, n)[torch.randperm(n, generator=self.generator)]
            if step == 2:
                g[3] = 0.0
            p.grad = g.clone()
            opt.step()
            fields[f"grad_{step}"] = g
            fields[f"after_{step}"] = p.detach().clone()
        state = opt.state[p]
        fields["exp_avg"] = state["exp_avg"]
        fields["exp_avg_sq"] = state["exp_avg_sq"]
        self.add(name, "adam", {"learning_rate": 2e-4, "beta1": 0.5, "beta2": 0.999, "epsilon": 1e-8, "steps": steps},
                 **fields)


def make_op_fixtures():
    c = OpCases(seed=20240611)
    c.conv2d("conv2d_k3_s1_p1_odd", 2, 3, 7, 5, 4, 3, 1, 1, bias=True)
    c.conv2d("conv2d_k4_s2_p1", 2, 3, 8, 8, 5, 4, 2, 1, bias=False)
    c.conv2d("conv2d_k4_s2_p1_odd", 1, 2, 9, 7, 3, 4, 2, 1, bias=True)
    c.conv2d("conv2d_k4_s1_p0", 3, 4, 4, 4, 6, 4, 1, 0, bias=False)
    c.conv2d("conv2d_k3_s1_p1_1x1", 2, 5, 1, 1, 1, 3, 1, 1, bias=False)  # the discriminator's classifier
    c.conv_transpose2d("conv_transpose2d_k4_s2_p1_bias", 2, 4, 4, 4, 3, 4, 2, 1, bias=True)
    c.conv_transpose2d("conv_transpose2d_k4_s2_p1_odd", 1, 3, 5, 3, 2, 4, 2, 1, bias=False)
    c.conv_transpose2d("conv_transpose2d_k4_s2_p1_1x1", 3, 6, 1, 1, 4, 4, 2, 1, bias=False)  # innermost level
    c.conv_transpose2d("conv_transpose2d_k3_s1_p1_bias", 2, 2, 5, 6, 3, 3, 1, 1, bias=True)
    c.batch_norm_training("batch_norm_training_4x3x5x5", 4, 3, 5, 5)
    c.batch_norm_training("batch_norm_training_4x5x2x2", 4, 5, 2, 2)
    c.batch_norm_eval("batch_norm_eval_3x4x3x3", 3, 4, 3, 3)
    shape = (2, 3, 4, 5)
    c.activation("leaky_relu", "leaky_relu", lambda x: F.leaky_relu(x, 0.2), shape)
    c.activation("relu", "relu", F.relu, shape)
    c.activation("tanh", "tanh", torch.tanh, shape)
    c.activation("sigmoid", "sigmoid", torch.sigmoid, shape)
    one_minus = float(np.float32(1) - np.float32(2.0 ** -24))  # the float just below 1
    c.bce("bce_loss", [0.0, 1.0, 1e-7, one_minus, 1e-3, 0.999, 0.25, 0.5, 0.8, 0.1, 0.93, 0.6, 0.02, 0.71, 0.45, 0.3],
          [0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.3, 0.7, 1.0])
    # Both saturated cases: log clamped at -100, denominator p(1 - p) clamped at 1e-12.
    c.bce("bce_loss_saturated", [0.0, 1.0, 0.4, 0.7], [1.0, 0.0, 1.0, 0.0])
    c.pairwise("l1_loss", "l1_loss", F.l1_loss, (2, 3, 4, 4))
    c.pairwise("mse_loss", "mse_loss", F.mse_loss, (2, 3, 4, 4))
    c.adam("adam", 37, 3)
    write(os.path.join(FIXTURES, "parity_ops.safetensors"), c.tensors,
          OrderedDict(cases=c.cases, generated_by="scripts/make_fixtures.py", torch_version=torch.__version__))


# ---- the whole model -----------------------------------------------------------------------

TINY = dict(isize=32, nc=1, ngf=4, ndf=4, nz=8)
W_ADV, W_CON, W_LAT = 1.0, 50.0, 1.0


def l2_loss(a, b):
    """lib/loss.py l2_loss (size_average=True)."""
    return torch.mean(torch.pow((a - b), 2))


class OfficialTraining:
    """Skipganomaly.optimize_params (lib/models/skipganomaly.py) step after step, with its two
    Adam optimisers kept between steps.

    As sga::SkipGanomaly::train_step documents it: x_hat = G(x) (the official forward_g adds
    self.noise, a torch.empty buffer that set_input never fills; we take it as zero).
    The official backward_d calls err_d.backward() after optimizer_g.step() changed G's
    weights in place; PyTorch 1.2 allowed that, current PyTorch refuses it. Only D's
    gradients of err_d are used (optimizer_d.zero_grad() runs first, and G's gradients are
    zeroed before they are used again), and those do not depend on G's weights, so
    autograd.grad(err_d, D's parameters) gives exactly what PyTorch 1.2 stepped D with.

    reinit_d (D loss below 1e-5) draws fresh D weights from `reinit_generator` and keeps the
    optimiser state; without a generator a re-initialisation is an error (fixtures avoid it).
    """

    def __init__(self, netg, netd, lr=2e-4, reinit_generator=None):
        self.netg, self.netd = netg, netd
        self.opt_g = torch.optim.Adam(netg.parameters(), lr=lr, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(netd.parameters(), lr=lr, betas=(0.5, 0.999))
        self.bce, self.l1 = nn.BCELoss(), nn.L1Loss()
        self.reinit_generator = reinit_generator
        self.reinits = 0

    def step(self, x):
        """One optimize_params on batch x: returns the seven losses (losses_order) and the
        gradients each optimiser stepped with."""
        n = x.shape[0]
        real_label = torch.ones(n, dtype=x.dtype)
        fake_label = torch.zeros(n, dtype=x.dtype)
        netg, netd = self.netg, self.netd
        netg.train()
        netd.train()
        # forward_g, forward_d
        fake = netg(x)
        pred_real, feat_real = netd(x)
        pred_fake, feat_fake = netd(fake)
        # update_netg
        self.opt_g.zero_grad()
        err_g_adv = W_ADV * self.bce(pred_fake, real_label)
        err_g_con = W_CON * self.l1(fake, x)
        err_g_lat = W_LAT * l2_loss(feat_fake, feat_real)
        err_g = err_g_adv + err_g_con + err_g_lat
        err_g.backward(retain_graph=True)
        grads_g = OrderedDict((k, p.grad.detach().clone()) for k, p in netg.named_parameters())
        self.opt_g.step()
        # update_netd
        self.opt_d.zero_grad()
        pred_fake_detached, _ = netd(fake.detach())
        err_d_fake = self.bce(pred_fake_detached, fake_label)
        err_d_real = self.bce(pred_real, real_label)
        err_d = err_d_real + err_d_fake + err_g_lat
        names, params = zip(*netd.named_parameters())
        for p, g in zip(params, torch.autograd.grad(err_d, params)):
            p.grad = g
        grads_d = OrderedDict((k, p.grad.detach().clone()) for k, p in zip(names, params))
        self.opt_d.step()
        if err_d.item() < 1e-5:
            assert self.reinit_generator is not None, "the discriminator would be re-initialised; pick another seed"
            init_dcgan(netd, self.reinit_generator, perturb_biases=False)
            self.reinits += 1
        losses = torch.stack([err_g, err_g_adv, err_g_con, err_g_lat, err_d, err_d_real, err_d_fake]).detach()
        return losses, grads_g, grads_d


def official_train_step(netg, netd, x):
    """One optimize_params from fresh optimisers."""
    return OfficialTraining(netg, netd).step(x)


def tiny_batch(gen, n):
    """n random tiny-size images in [-1, 1]."""
    return torch.rand((n, TINY["nc"], TINY["isize"], TINY["isize"]), generator=gen) * 2 - 1


def tiny_networks(gen, warm_batch):
    """The official networks at TINY size, initialised with perturbed biases (see init_dcgan)
    and running statistics warmed on a random batch of warm_batch images, all drawn from gen."""
    netg, netd = make_networks(**TINY)
    init_dcgan(netg, gen, perturb_biases=True)
    init_dcgan(netd, gen, perturb_biases=True)
    warm_running_statistics(netg, netd, tiny_batch(gen, warm_batch))
    return netg, netd


def tiny_model_results(netg, netd, x_forward, x_step):
    """Every number the whole-model fixture holds, computed in netg/netd's dtype."""
    r = OrderedDict()
    # (a) forward, train mode: batch statistics, running statistics updated once by G(x) and once by D(x).
    g, d = copy.deepcopy(netg), copy.deepcopy(netd)
    g.train()
    d.train()
    with torch.no_grad():
        out = g(x_forward)
        pred, feat = d(x_forward)
    r["train_forward.g_output"], r["train_forward.d_prediction"], r["train_forward.d_features"] = out, pred, feat
    for prefix, net in (("netg.", g), ("netd.", d)):
        for key, value in net.state_dict().items():
            if key.endswith("running_mean") or key.endswith("running_var"):
                r["train_forward." + prefix + key] = value
    # (a) forward, eval mode: running statistics.
    g, d = copy.deepcopy(netg), copy.deepcopy(netd)
    g.eval()
    d.eval()
    with torch.no_grad():
        out = g(x_forward)
        pred, feat = d(x_forward)
        pred_fake, feat_fake = d(out)
    r["eval_forward.g_output"], r["eval_forward.d_prediction"], r["eval_forward.d_features"] = out, pred, feat
    r["eval_forward.d_fake_prediction"], r["eval_forward.d_fake_features"] = pred_fake, feat_fake
    # (b) one training step.
    g, d = copy.deepcopy(netg), copy.deepcopy(netd)
    losses, grads_g, grads_d = official_train_step(g, d, x_step)
    r["step.losses"] = losses
    for key, value in grads_g.items():
        r["step.grad.netg." + key] = value
    for key, value in grads_d.items():
        r["step.grad.netd." + key] = value
    for prefix, net in (("netg.", g), ("netd.", d)):
        for key, value in net.state_dict().items():
            if not key.endswith("num_batches_tracked"):
                r["step." + prefix + key] = value
    tracked = OrderedDict()
    for prefix, before, after in (("netg", netg, g), ("netd", netd, d)):
        b = {k: v.item() for k, v in before.state_dict().items() if k.endswith("num_batches_tracked")}
        a = {k: v.item() for k, v in after.state_dict().items() if k.endswith("num_batches_tracked")}
        tracked[prefix] = sorted({a[k] - b[k] for k in a})
    return r, tracked


def noise_floor(r32, r64):
    """max|a32 - a64| / max|a64| per group of entries: how far float32 PyTorch itself is from
    the same computation in float64."""
    groups = OrderedDict()
    for key, v64 in r64.items():
        v32 = r32[key].double()
        group = key.split(".")[0] if not key.startswith("step.") else ".".join(key.split(".")[:3 if key.startswith("step.grad") else 2])
        scale = v64.abs().max().item()
        err = (v32 - v64).abs().max().item() / (scale if scale > 0 else 1.0)
        groups[group] = max(groups.get(group, 0.0), err)
    return groups


def make_tiny_model_fixture():
    torch.manual_seed(7)
    gen = torch.Generator().manual_seed(1234)
    netg, netd = tiny_networks(gen, 4)
    x_forward = tiny_batch(gen, 4)
    x_step = tiny_batch(gen, 4)

    r32, tracked = tiny_model_results(netg, netd, x_forward, x_step)
    r64, _ = tiny_model_results(copy.deepcopy(netg).double(), copy.deepcopy(netd).double(), x_forward.double(),
                                x_step.double())
    floor = noise_floor(r32, r64)
    print("float32 PyTorch vs float64 PyTorch, max|a32 - a64| / max|a64| per group:")
    for group, err in floor.items():
        print(f"  {group:32s} {err:.2e}")
    # Adam's first step moves each weight by about lr * sign(gradient): an element whose
    # gradient is within rounding of zero may step either way. Count them.
    flips = 0
    for key in r64:
        if key.startswith("step.grad."):
            flips += int(((r32[key] > 0) != (r64[key] > 0)).sum().item())
    print(f"  gradient elements whose sign differs between float32 and float64: {flips}")

    tensors = state_arrays("netg.", netg) + state_arrays("netd.", netd)
    tensors += [("x_forward", f32(x_forward)), ("x_step", f32(x_step))]
    tensors += [(k, f32(v)) for k, v in r32.items()]
    metadata = OrderedDict(
        architecture=TINY,
        losses_order=["generator", "generator_adversarial", "generator_contextual", "generator_latent",
                      "discriminator", "discriminator_real", "discriminator_fake"],
        loss_weights={"adversarial": W_ADV, "contextual": W_CON, "latent": W_LAT},
        adam={"learning_rate": 2e-4, "beta1": 0.5, "beta2": 0.999, "epsilon": 1e-8},
        num_batches_tracked_increment=tracked,
        float32_vs_float64=floor,
        gradient_sign_differences_float32_vs_float64=flips,
        generated_by="scripts/make_fixtures.py",
        torch_version=torch.__version__)
    write(os.path.join(FIXTURES, "parity_tiny_model.safetensors"), tensors, metadata)


TRAJECTORY_STEPS = 6


def run_trajectory(netg, netd, batches, fresh_optimisers=False):
    """TRAJECTORY_STEPS official steps, one per batch; returns the (steps, 7) losses.
    fresh_optimisers=True restarts Adam at every step: a deliberate bug whose distance from
    the real trajectory shows how much the fixture can see."""
    training = OfficialTraining(netg, netd)
    losses = []
    for x in batches:
        if fresh_optimisers:
            training = OfficialTraining(netg, netd)
        losses.append(training.step(x)[0])
    return torch.stack(losses)


def displacement_error(start, reference, other):
    """max over state-dict tensors of |(other - start) - (reference - start)|_2 / |reference - start|_2."""
    worst = 0.0
    for key, s in start.items():
        if key.endswith("num_batches_tracked"):
            continue
        moved = (reference[key].double() - s.double()).norm().item()
        worst = max(worst, (other[key].double() - reference[key].double()).norm().item() / moved)
    return worst


def make_trajectory_fixture():
    """Six consecutive official steps on six batches from one starting point: what carries
    from step to step (Adam moments and step counts of both optimisers, running statistics,
    the weights the next forward pass uses) is pinned here; the single-step fixture cannot
    see it."""
    gen = torch.Generator().manual_seed(4321)
    netg, netd = tiny_networks(gen, 4)
    batches = [tiny_batch(gen, 4) for _ in range(TRAJECTORY_STEPS)]
    start = {"netg." + k: v.clone() for k, v in netg.state_dict().items()}
    start.update({"netd." + k: v.clone() for k, v in netd.state_dict().items()})

    def final_state(g, d):
        state = {"netg." + k: v for k, v in g.state_dict().items()}
        state.update({"netd." + k: v for k, v in d.state_dict().items()})
        return state

    g32, d32 = copy.deepcopy(netg), copy.deepcopy(netd)
    losses32 = run_trajectory(g32, d32, batches)
    g64, d64 = copy.deepcopy(netg).double(), copy.deepcopy(netd).double()
    losses64 = run_trajectory(g64, d64, [x.double() for x in batches])
    gbug, dbug = copy.deepcopy(netg), copy.deepcopy(netd)
    run_trajectory(gbug, dbug, batches, fresh_optimisers=True)
    final32 = final_state(g32, d32)
    floor = {
        "losses_max_relative": ((losses32.double() - losses64).abs() / losses64.abs()).max().item(),
        "displacement_max_relative": displacement_error(start, final_state(g64, d64), final32),
        "fresh_optimisers_displacement_max_relative": displacement_error(start, final32, final_state(gbug, dbug)),
    }
    print("trajectory: float32 vs float64 PyTorch, and a deliberate bug (Adam restarted every step):")
    for key, value in floor.items():
        print(f"  {key:44s} {value:.2e}")

    tensors = state_arrays("netg.", netg) + state_arrays("netd.", netd)
    tensors += [(f"x_step_{i + 1}", f32(x)) for i, x in enumerate(batches)]
    tensors += [("losses", f32(losses32))]
    tensors += state_arrays("final.netg.", g32) + state_arrays("final.netd.", d32)
    metadata = OrderedDict(
        architecture=TINY,
        steps=TRAJECTORY_STEPS,
        losses_order=["generator", "generator_adversarial", "generator_contextual", "generator_latent",
                      "discriminator", "discriminator_real", "discriminator_fake"],
        loss_weights={"adversarial": W_ADV, "contextual": W_CON, "latent": W_LAT},
        adam={"learning_rate": 2e-4, "beta1": 0.5, "beta2": 0.999, "epsilon": 1e-8},
        float32_vs_float64=floor,
        generated_by="scripts/make_fixtures.py",
        torch_version=torch.__version__)
    write(os.path.join(FIXTURES, "parity_tiny_trajectory.safetensors"), tensors, metadata)


# ---- names and shapes of the full-size networks --------------------------------------------

def make_state_dict_fixture():
    netg, netd = make_networks(isize=32, nc=3, ngf=64, ndf=64, nz=100)

    def entries(net):
        params = dict(net.named_parameters())
        out = []
        for key, value in net.state_dict().items():
            kind = "parameter" if key in params else "buffer"
            out.append(OrderedDict([("name", key), ("shape", list(value.shape)), ("kind", kind)]))
        return out

    doc = OrderedDict(
        architecture=dict(isize=32, nc=3, ngf=64, ndf=64, nz=100),
        generator_parameter_count=sum(p.numel() for p in netg.parameters()),
        discriminator_parameter_count=sum(p.numel() for p in netd.parameters()),
        generator=entries(netg),
        discriminator=entries(netd),
        generated_by="scripts/make_fixtures.py",
        torch_version=torch.__version__)
    assert doc["generator_parameter_count"] == 16659075, doc["generator_parameter_count"]
    assert doc["discriminator_parameter_count"] == 1069700, doc["discriminator_parameter_count"]
    path = os.path.join(FIXTURES, "parity_state_dict.json")
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(f"wrote {os.path.relpath(path, ROOT)}: {len(doc['generator'])} + {len(doc['discriminator'])} entries")


# ---- converter round trip --------------------------------------------------------------------

def make_converted_fixture():
    torch.manual_seed(11)
    gen = torch.Generator().manual_seed(4321)
    netg, netd = tiny_networks(gen, 8)
    images = tiny_batch(gen, 5)
    netg.eval()
    netd.eval()
    with torch.no_grad():
        fake = netg(images)
        _, feat_real = netd(images)
        _, feat_fake = netd(fake)
        n = images.shape[0]
        rec = torch.mean(torch.pow((images - fake).view(n, -1), 2), dim=1)
        lat = torch.mean(torch.pow((feat_real - feat_fake).view(n, -1), 2), dim=1)
        scores = 0.9 * rec + 0.1 * lat

    out = os.path.join(FIXTURES, "converted_tiny.safetensors")
    with tempfile.TemporaryDirectory() as folder:
        netg_path, netd_path = os.path.join(folder, "netG.pth"), os.path.join(folder, "netD.pth")
        # As the official save_weights, netD with a DataParallel prefix to exercise its removal.
        torch.save({"epoch": 3, "state_dict": netg.state_dict()}, netg_path)
        torch.save({"epoch": 3, "state_dict": OrderedDict(("module." + k, v) for k, v in netd.state_dict().items())},
                   netd_path)
        subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "convert_official_weights.py"),
                        "--netg", netg_path, "--netd", netd_path, "--isize", str(TINY["isize"]), "--nc", str(TINY["nc"]),
                        "--ngf", str(TINY["ngf"]), "--ndf", str(TINY["ndf"]), "--nz", str(TINY["nz"]), "--out", out],
                       check=True)
    print(f"  ({os.path.getsize(out)} bytes)")
    write(os.path.join(FIXTURES, "converted_tiny_scores.safetensors"),
          [("images", f32(images)), ("scores", f32(scores)), ("reconstruction", f32(rec)), ("latent", f32(lat))],
          OrderedDict(architecture=TINY, mode="eval", generated_by="scripts/make_fixtures.py",
                      torch_version=torch.__version__))


def main():
    os.makedirs(FIXTURES, exist_ok=True)
    make_op_fixtures()
    make_tiny_model_fixture()
    make_trajectory_fixture()
    make_state_dict_fixture()
    make_converted_fixture()


if __name__ == "__main__":
    main()
