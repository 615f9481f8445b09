"""One planted bug per entry of the diagnosis catalogue (``tinygrad_cnn.bookdiag.CATALOGUE``).

Each class overrides one method of a correct layer from ``layers.py`` with a bug a learner
really writes; the line is marked ``# BUG``. ``BUGS`` maps each name to the diagnosis
``tinygrad-cnn check`` must give and the input shape to check it with:

    tinygrad-cnn check examples/book_layers/buggy.py:ReluInverted --input-shape 2,3,4,4
    tinygrad-cnn check examples/book_layers/buggy.py:transposed_affine
"""

from __future__ import annotations

import numpy as np

from .layers import (
    Affine,
    BatchNormalization,
    Convolution,
    Dropout,
    Pooling,
    Relu,
    Sigmoid,
    SimpleConvNet,
    SoftmaxWithLoss,
    col2im,
)


def _params(*shape: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return rng.standard_normal(shape), rng.standard_normal(
        shape[-1] if len(shape) == 2 else shape[0]
    )


class AffineTypo(Affine):
    def backward(self, dout):
        dx = dout @ self.W.T
        self.dw = self.x.T @ dout  # BUG: the book's name is dW
        self.db = np.sum(dout, axis=0)
        return dx.reshape(*self.original_x_shape)


class AffineNoReshape(Affine):
    def backward(self, dout):
        self.dW = self.x.T @ dout
        self.db = np.sum(dout, axis=0)
        return dout @ self.W.T  # BUG: not reshaped back to x's (N, C, H, W)


class AffineTransposed(Affine):
    def backward(self, dout):
        self.dW = dout.T @ self.x  # BUG: the product in the wrong order
        self.db = np.sum(dout, axis=0)
        return (dout @ self.W.T).reshape(*self.original_x_shape)


class AffineBiasAxis(Affine):
    def backward(self, dout):
        self.dW = self.x.T @ dout
        self.db = np.sum(dout, axis=1)  # BUG: sums over the features, not the batch
        return (dout @ self.W.T).reshape(*self.original_x_shape)


class ReluStale(Relu):
    def forward(self, x):
        if self.mask is None:  # BUG: the mask of the first batch is kept for ever
            self.mask = x <= 0
        out = x.copy()
        out[self.mask] = 0
        return out


class SigmoidSign(Sigmoid):
    def backward(self, dout):
        return dout * (self.out - 1.0) * self.out  # BUG: (1 - y) written as (y - 1)


class SoftmaxWithLossNoMean(SoftmaxWithLoss):
    def backward(self, dout=1):
        dx = self.y.copy()
        dx[np.arange(self.t.shape[0]), self.t] -= 1
        return dx  # BUG: forward takes the mean over the batch, backward forgets / batch_size


class DropoutScaled(Dropout):
    def forward(self, x, train_flg=True):
        if train_flg:
            self.mask = np.random.rand(*x.shape) > self.dropout_ratio  # noqa: NPY002 (the book's global RNG)
            return x * self.mask / (1.0 - self.dropout_ratio)  # inverted dropout ...
        return x

    def backward(self, dout):
        return dout * self.mask  # BUG: ... but backward forgets / (1 - dropout_ratio)


class SigmoidLoop(Sigmoid):
    def backward(self, dout):
        dx = np.zeros_like(dout)
        for n in range(dout.shape[0]):
            dx[n] = dout[n] * (1.0 - self.out[n]) * self.out[n]
            return dx  # BUG: indented into the loop, so only sample 0 is done


def col2im_overwrite(col, input_shape, filter_h, filter_w, stride=1, pad=0):
    N, C, H, W = input_shape
    out_h, out_w = (H + 2 * pad - filter_h) // stride + 1, (W + 2 * pad - filter_w) // stride + 1
    col = col.reshape(N, out_h, out_w, C, filter_h, filter_w).transpose(0, 3, 4, 5, 1, 2)
    img = np.zeros((N, C, H + 2 * pad + stride - 1, W + 2 * pad + stride - 1), dtype=col.dtype)
    for i in range(filter_h):
        for j in range(filter_w):
            img[:, :, i : i + stride * out_h : stride, j : j + stride * out_w : stride] = col[
                :, :, i, j
            ]  # BUG: = instead of +=
    return img[:, :, pad : H + pad, pad : W + pad]


class ConvolutionOverwrite(Convolution):
    def backward(self, dout):
        FN, C, FH, FW = self.W.shape
        dout = dout.transpose(0, 2, 3, 1).reshape(-1, FN)
        self.db = np.sum(dout, axis=0)
        self.dW = (self.col.T @ dout).transpose(1, 0).reshape(FN, C, FH, FW)
        dcol = dout @ self.col_W.T
        return col2im_overwrite(dcol, self.x.shape, FH, FW, self.stride, self.pad)


class ReluInverted(Relu):
    def backward(self, dout):
        dout[~self.mask] = 0  # BUG: zeroes where x > 0 instead of where x <= 0
        return dout


class ReluMaskFromDout(Relu):
    def backward(self, dout):
        dout[dout <= 0] = 0  # BUG: the mask must come from x (self.mask), not from dout
        return dout


class SigmoidHalf(Sigmoid):
    def backward(self, dout):
        return dout * self.out  # BUG: the (1 - y) factor is missing (not in the catalogue)


class PoolingNoTranspose(Pooling):
    def backward(self, dout):
        pool_size = self.pool_h * self.pool_w
        dmax = np.zeros((dout.size, pool_size), dtype=dout.dtype)
        # BUG: dout is (N, C, OH, OW) but the rows of arg_max are (N, OH, OW, C): the
        # dout.transpose(0, 2, 3, 1) before flatten() is missing
        dmax[np.arange(self.arg_max.size), self.arg_max] = dout.flatten()
        dcol = dmax.reshape(dout.shape[0] * dout.shape[2] * dout.shape[3], -1)
        return col2im(dcol, self.x.shape, self.pool_h, self.pool_w, self.stride, self.pad)


class BatchNormNoMean(BatchNormalization):
    def backward(self, dout):
        dout = dout.reshape(dout.shape[0], -1)  # (N, C, H, W) -> (N, C*H*W), as forward
        self.dbeta = dout.sum(axis=0)
        self.dgamma = np.sum(self.xn * dout, axis=0)
        dxn = self.gamma * dout
        dxc = dxn / self.std
        dstd = -np.sum((dxn * self.xc) / (self.std * self.std), axis=0)
        dxc += (2.0 / self.batch_size) * self.xc * (0.5 * dstd / self.std)
        dx = dxc  # BUG: dx = dxc - dmu / N; the mean term (dmu = dxc.sum(axis=0)) is missing
        return dx.reshape(*self.input_shape)


def buggy_simpleconvnet():
    """The book's SimpleConvNet with the pooling bug above, for ``check_network``."""
    net = SimpleConvNet(seed=0)
    net.layers["Pool1"] = PoolingNoTranspose(pool_h=2, pool_w=2, stride=2)
    return net


def copied_params_net():
    """A small SimpleConvNet whose Affine1 computes with a copy of ``params['W2']``: training
    updates params['W2'], which the loss does not depend on."""
    net = SimpleConvNet(
        input_dim=(1, 10, 10),
        conv_param={"filter_num": 3, "filter_size": 3},
        hidden_size=8,
        output_size=4,
        weight_init_std=0.1,
        seed=0,
    )
    p = net.params
    net.layers["Affine1"] = Affine(p["W2"].copy(), p["b2"])  # BUG: a copy, not params['W2']
    return net


def typo_affine():
    return AffineTypo(*_params(12, 5))


def no_reshape_affine():
    return AffineNoReshape(*_params(12, 5))


def transposed_affine():
    return AffineTransposed(*_params(12, 5))


def bias_axis_affine():
    return AffineBiasAxis(*_params(12, 5))


def batchnorm_no_mean():
    gamma, beta = _params(5)
    return BatchNormNoMean(1 + 0.1 * gamma, 0.1 * beta)


def overwrite_convolution():
    return ConvolutionOverwrite(*_params(3, 2, 3, 3))


#: name -> (diagnosis code, input shape for ``--input-shape``)
BUGS = {
    "typo_affine": ("missing-gradient", "4,12"),
    "copied_params_net": ("not-used", "6,1,10,10"),
    "no_reshape_affine": ("wrong-shape", "2,3,2,2"),
    "transposed_affine": ("transposed", "4,12"),
    "bias_axis_affine": ("bias-axis", "4,12"),
    "ReluStale": ("stale-cache", "2,3,4,4"),
    "SigmoidSign": ("sign-flipped", "3,5"),
    "SoftmaxWithLossNoMean": ("batch-factor", "4,10"),
    "DropoutScaled": ("constant-factor", "4,10"),
    "SigmoidLoop": ("first-sample-only", "3,5"),
    "overwrite_convolution": ("window-overlap", "2,2,6,6"),
    "ReluInverted": ("mask-inverted", "2,3,4,4"),
    "ReluMaskFromDout": ("mask-wrong-array", "2,3,4,4"),
    "batchnorm_no_mean": ("missing-mean", "8,5"),
    "SigmoidHalf": ("unrecognised", "3,5"),
}
