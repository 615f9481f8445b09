"""The training monitor: right records, right numbers, no hook left behind, a valid picture."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tinygrad_cnn import RemovableHandle, Tensor
from tinygrad_cnn.data import load_mnist_mini
from tinygrad_cnn.io import load_npz, save_npz
from tinygrad_cnn.monitor import Monitor, plot_monitor
from tinygrad_cnn.nn import Linear, Module, ReLU, Sequential, SimpleConvNet
from tinygrad_cnn.train import Trainer

PARAMS = ["conv1.weight", "conv1.bias", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
LEAVES = ["conv1", "relu1", "pool1", "flatten", "fc1", "relu2", "fc2"]


@pytest.fixture(scope="module")
def small_data():
    (x, t), (xt, tt) = load_mnist_mini()
    return x[:250], t[:250], xt[:60], tt[:60]


def make_trainer(data, epochs=1, **kw) -> Trainer:
    net = SimpleConvNet(seed=0, weight_init_std="he")
    return Trainer(net, *data, epochs=epochs, verbose=False, seed=0, **kw)


@pytest.fixture
def hook_spy(monkeypatch):
    """Counts the forward hooks currently attached through ``Module.register_forward_hook``."""
    active: set[int] = set()
    real = Module.register_forward_hook

    def register(self, hook):
        handle = real(self, hook)
        key = id(handle)
        active.add(key)

        def remove():
            handle.remove()
            active.discard(key)

        return RemovableHandle(remove)

    monkeypatch.setattr(Module, "register_forward_hook", register)
    return active


def test_records_have_the_keys_layers_and_step_numbers(small_data):
    trainer = make_trainer(small_data, epochs=2, monitor=2)  # 3 steps per epoch: 0..5
    history = trainer.train()
    records = history["monitor"]
    assert [r["step"] for r in records] == [0, 2, 4]
    for r in records:
        assert set(r) == {
            "step", "grad_norm", "update_ratio", "act_mean", "act_std", "dead_relu", "zero_frac"
        }  # fmt: skip
        assert list(r["grad_norm"]) == list(r["update_ratio"]) == PARAMS
        assert list(r["act_mean"]) == list(r["act_std"]) == LEAVES
        assert list(r["dead_relu"]) == list(r["zero_frac"]) == ["relu1", "relu2"]
        assert all(v > 0 for v in r["grad_norm"].values())
        assert all(0 <= v <= 1 for v in r["dead_relu"].values())
    json.dumps(history, allow_nan=False)  # strict JSON: no NaN or Infinity anywhere
    # the zero-initialised biases have no ratio at step 0, and have one once they moved
    assert records[0]["update_ratio"]["conv1.bias"] is None
    assert records[1]["update_ratio"]["conv1.bias"] > 0


def test_grad_norm_is_the_norm_of_that_steps_gradient(small_data):
    x, t = small_data[0], small_data[1]
    trainer = make_trainer(small_data, monitor=1)
    for step in range(2):
        trainer.train_step(x[:50], t[:50])
        record = trainer.history["monitor"][-1]
        assert record["step"] == step
        for name, p in trainer.network.named_parameters():
            assert record["grad_norm"][name] == pytest.approx(np.linalg.norm(p.grad), rel=1e-6)


def test_update_ratio_matches_a_manual_sgd_step(small_data):
    x, t = small_data[0], small_data[1]
    lr = 0.1
    trainer = make_trainer(small_data, monitor=1, optimizer="SGD", optimizer_param={"lr": lr})
    for step in range(2):
        before = {name: p.data.astype(np.float64) for name, p in trainer.network.named_parameters()}
        trainer.train_step(x[:50], t[:50])
        record = trainer.history["monitor"][-1]
        for name, p in trainer.network.named_parameters():
            size = np.linalg.norm(before[name])
            if size == 0:  # the biases at step 0
                assert record["update_ratio"][name] is None
                continue
            want = np.linalg.norm(lr * p.grad.astype(np.float64)) / size
            assert record["update_ratio"][name] == pytest.approx(want, rel=1e-4), (step, name)
    assert record["update_ratio"]["fc1.bias"] is not None


def test_activation_stats_and_dead_relus_on_a_constructed_input():
    net = Sequential(Linear(2, 4), ReLU())
    # x > 0: unit 0 is always negative (dead), unit 1 always positive, unit 2 = x0 - x1 is
    # positive for half the batch, unit 3 is pushed below zero by its bias (dead)
    net[0].weight.data[...] = np.array([[-1, 1, 1, 0], [-1, 1, -1, 0]], np.float32)
    net[0].bias.data[...] = np.array([0, 0, 0, -100], np.float32)
    x = np.array([[1, 2], [2, 1], [3, 5], [4, 1]], np.float32)
    mon = Monitor(every=1)
    with mon.watch(net, 0):
        net(Tensor(x)).sum().backward()
    (record,) = mon.records
    h = x @ net[0].weight.data + net[0].bias.data
    y = np.maximum(h, 0)
    assert record["dead_relu"] == {"1": 0.5}
    assert record["zero_frac"] == {"1": np.count_nonzero(y == 0) / y.size}  # 10 of 16
    assert record["act_mean"] == pytest.approx({"0": h.mean(), "1": y.mean()}, rel=1e-6)
    assert record["act_std"] == pytest.approx({"0": h.std(), "1": y.std()}, rel=1e-6)
    assert record["grad_norm"]["0.weight"] == pytest.approx(np.linalg.norm(net[0].weight.grad))
    assert record["update_ratio"] == {"0.weight": 0.0, "0.bias": 0.0}  # no optimizer step


def test_a_module_called_twice_pools_its_outputs():
    relu = ReLU()
    a = np.array([[1.0, 0.0, 0.0], [2.0, 0.0, 3.0]], np.float32)
    b = np.array([[0.0, 0.0, 5.0]], np.float32)
    mon = Monitor(every=1)
    with mon.record(relu, 7):
        relu(Tensor(a))
        relu(Tensor(b))
    (record,) = mon.records
    both = np.concatenate([a, b])
    assert record["step"] == 7
    assert record["act_mean"]["ReLU"] == pytest.approx(both.mean())
    assert record["act_std"]["ReLU"] == pytest.approx(both.std())
    assert record["dead_relu"]["ReLU"] == pytest.approx(1 / 3)  # only the middle unit
    assert record["zero_frac"]["ReLU"] == pytest.approx(5 / 9)


def test_hooks_are_attached_only_for_the_recorded_steps(small_data, hook_spy):
    trainer = make_trainer(small_data, mini_batch_size=50, monitor=3)  # steps 0..4
    seen = []  # attached monitor hooks at each call of fc2: training steps, then evaluation
    trainer.network.fc2.register_forward_hook(lambda m, xs, y: seen.append(len(hook_spy)))
    hook_spy.clear()  # that one is ours
    trainer.train()
    assert seen[:5] == [len(LEAVES), 0, 0, len(LEAVES), 0]
    assert len(seen) > 5 and set(seen[5:]) == {0}  # evaluation runs without them
    assert len(hook_spy) == 0
    assert [r["step"] for r in trainer.history["monitor"]] == [0, 3]


def test_a_failing_step_removes_the_hooks_and_records_nothing(small_data, hook_spy):
    net = SimpleConvNet(seed=0)
    mon = Monitor(every=1)
    with pytest.raises(RuntimeError, match="boom"), mon.watch(net, 0):
        net(small_data[0][:4])
        assert len(hook_spy) == len(LEAVES)
        raise RuntimeError("boom")
    assert len(hook_spy) == 0
    assert mon.records == []


def test_the_monitor_does_not_change_training(small_data):
    plain = make_trainer(small_data, epochs=2)
    watched = make_trainer(small_data, epochs=2, monitor=1)
    plain.train()
    watched.train()
    assert watched.train_loss_list == plain.train_loss_list
    for a, b in zip(plain.network.parameters(), watched.network.parameters(), strict=True):
        np.testing.assert_array_equal(a.data, b.data)
    assert len(watched.history["monitor"]) == 6


def test_trainer_monitor_option(small_data):
    assert "monitor" not in make_trainer(small_data).train()
    assert make_trainer(small_data, monitor=False).monitor is None
    assert make_trainer(small_data, monitor=True).monitor.every == 50
    assert make_trainer(small_data, monitor=7).monitor.every == 7
    mine = Monitor(every=4)
    assert make_trainer(small_data, monitor=mine).monitor is mine
    with pytest.raises(ValueError, match="Trainer: monitor"):
        make_trainer(small_data, monitor=0)
    with pytest.raises(TypeError, match="Trainer: monitor.*str"):
        make_trainer(small_data, monitor="yes")
    for bad in (0, -3, True, 2.5):
        with pytest.raises(ValueError, match="Monitor: every"):
            Monitor(every=bad)


def test_monitor_records_survive_a_resume(small_data, tmp_path):
    full = make_trainer(small_data, epochs=2, monitor=2)
    full.train()
    ckpt = tmp_path / "ckpt.npz"
    make_trainer(small_data, epochs=1, monitor=2, checkpoint=ckpt).train()
    resumed = make_trainer(small_data, epochs=2, monitor=2)
    resumed.load_checkpoint(ckpt)
    assert [r["step"] for r in resumed.history["monitor"]] == [0, 2]
    resumed.train()
    assert resumed.history["monitor"] == full.history["monitor"]
    # resumed without a monitor, the records already made are kept, and none are added
    unwatched = make_trainer(small_data, epochs=2)
    unwatched.load_checkpoint(ckpt)
    unwatched.train()
    assert [r["step"] for r in unwatched.history["monitor"]] == [0, 2]


def test_damaged_monitor_records_in_a_checkpoint_are_refused(small_data, tmp_path):
    ckpt = tmp_path / "ckpt.npz"
    make_trainer(small_data, monitor=2, checkpoint=ckpt).train()
    arrays = load_npz(ckpt)
    meta = json.loads(str(arrays["meta"]))
    meta["history"]["monitor"] = [{"step": "zero"}]
    arrays["meta"] = np.array(json.dumps(meta))
    save_npz(ckpt, arrays)
    trainer = make_trainer(small_data, monitor=2)
    with pytest.raises(ValueError, match="damaged checkpoint metadata.*monitor"):
        trainer.load_checkpoint(ckpt)
    assert trainer.history["monitor"] == []


def test_plot_monitor_writes_a_png(small_data, tmp_path):
    image = pytest.importorskip("matplotlib.image")
    history = make_trainer(small_data, epochs=2, monitor=1).train()
    path = plot_monitor(history, tmp_path / "monitor.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = image.imread(path)
    assert pixels.shape[0] > 400 and pixels.shape[1] > 600  # the 2x2 grid, not an empty canvas
    assert pixels[..., :3].std() > 0.05
    assert [p.name for p in tmp_path.iterdir()] == ["monitor.png"]  # no temp file left
    with pytest.raises(ValueError, match="plot_monitor: no monitor records"):
        plot_monitor(make_trainer(small_data).history, tmp_path / "none.png")
