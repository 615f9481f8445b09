"""Trainer: one evaluation per epoch, determinism, checkpoints that resume exactly."""

from __future__ import annotations

import numpy as np
import pytest

from tinygrad_cnn.data import load_mnist_mini
from tinygrad_cnn.nn import SimpleConvNet
from tinygrad_cnn.train import Trainer


@pytest.fixture(scope="module")
def small_data():
    (x, t), (xt, tt) = load_mnist_mini()
    return x[:250], t[:250], xt[:120], tt[:120]


def make_trainer(data, epochs=2, seed=0, **kw) -> Trainer:
    net = SimpleConvNet(seed=seed, weight_init_std="he")
    return Trainer(net, *data, epochs=epochs, verbose=False, seed=seed, **kw)


def params(trainer: Trainer) -> list[np.ndarray]:
    return [p.data.copy() for p in trainer.network.parameters()]


def test_one_evaluation_per_epoch_whatever_the_batch_size(small_data):
    trainer = make_trainer(small_data, epochs=3, mini_batch_size=100)  # 250 = 100+100+50
    history = trainer.train()
    assert len(history["train_acc"]) == len(history["test_acc"]) == 3
    assert len(history["train_loss"]) == 3 * 3  # the short batch is a step too
    assert all(0.0 <= a <= 1.0 for a in history["test_acc"])


def test_evaluate_sample_num_per_epoch_limits_the_evaluation(small_data, monkeypatch):
    import tinygrad_cnn.train as train_mod

    sizes = []
    real = train_mod.evaluate_accuracy

    def spy(net, x, t, batch_size=500):
        sizes.append(len(x))
        return real(net, x, t, batch_size)

    monkeypatch.setattr(train_mod, "evaluate_accuracy", spy)
    make_trainer(small_data, epochs=1, evaluate_sample_num_per_epoch=50).train()
    assert sizes == [50, 50]


def test_same_seed_gives_identical_final_parameters(small_data):
    a, b = make_trainer(small_data), make_trainer(small_data)
    a.train()
    b.train()
    for pa, pb in zip(params(a), params(b), strict=True):
        np.testing.assert_array_equal(pa, pb)
    c = make_trainer(small_data, seed=1)
    c.train()
    assert not np.array_equal(params(a)[0], params(c)[0])


def test_resumed_run_ends_with_the_parameters_of_an_uninterrupted_one(small_data, tmp_path):
    full = make_trainer(small_data, epochs=3, optimizer="Momentum", optimizer_param={"lr": 0.05})
    full.train()

    ckpt = tmp_path / "ckpt.npz"
    first = make_trainer(
        small_data, epochs=1, optimizer="Momentum", optimizer_param={"lr": 0.05}, checkpoint=ckpt
    )
    first.train()
    # a new process would start from scratch: a differently seeded trainer, then resume
    resumed = make_trainer(
        small_data, epochs=3, seed=7, optimizer="Momentum", optimizer_param={"lr": 0.05}
    )
    resumed.load_checkpoint(ckpt)
    assert resumed.epoch == 1
    resumed.train()
    for pa, pb in zip(params(full), params(resumed), strict=True):
        np.testing.assert_array_equal(pa, pb)
    assert resumed.test_acc_list == full.test_acc_list


def test_crash_while_saving_a_checkpoint_keeps_the_previous_one(small_data, tmp_path, monkeypatch):
    ckpt = tmp_path / "ckpt.npz"
    trainer = make_trainer(small_data, epochs=1, checkpoint=ckpt)
    trainer.train()
    before = ckpt.read_bytes()

    def broken_savez(file, **arrays):
        file.write(b"partial garbage")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="simulated"):
        trainer.save_checkpoint(ckpt)
    assert ckpt.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.npz"]  # no temp file left


def test_loading_something_that_is_not_a_checkpoint_fails_clearly(small_data, tmp_path):
    trainer = make_trainer(small_data)
    trainer.network.save_params(tmp_path / "params.npz")
    with pytest.raises(ValueError, match="not a tinygrad_cnn checkpoint"):
        trainer.load_checkpoint(tmp_path / "params.npz")


def test_a_resumed_run_with_dropout_draws_the_masks_of_an_uninterrupted_one(tmp_path):
    import tinygrad_cnn.functional as F
    from tinygrad_cnn.nn import Dropout, Flatten, Linear, ReLU, Sequential

    (x, t), (xt, tt) = load_mnist_mini()
    data = x[:200].reshape(200, -1), t[:200], xt[:50].reshape(50, -1), tt[:50]

    def trainer(epochs, seed=0, **kw):
        net = Sequential(Flatten(), Linear(784, 32, rng=seed), ReLU(), Dropout(0.5, rng=seed),
                         Linear(32, 10, rng=seed + 1))  # fmt: skip
        net.loss = lambda x, t: F.softmax_cross_entropy(net(x), t)
        return Trainer(net, *data, epochs=epochs, verbose=False, seed=0, mini_batch_size=50, **kw)

    full = trainer(2)
    full.train()
    ckpt = tmp_path / "ckpt.npz"
    trainer(1, checkpoint=ckpt).train()
    resumed = trainer(2, seed=5)  # another process: other weights and another mask stream
    resumed.load_checkpoint(ckpt)
    resumed.train()
    for pa, pb in zip(params(full), params(resumed), strict=True):
        np.testing.assert_array_equal(pa, pb)
