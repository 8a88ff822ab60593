"""The training loop's callbacks, one by one, and how the Trainer runs them."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from torch import nn

from cvbench.deep import distributed as dist_utils
from cvbench.deep.engine import (
    CURVES,
    Callback,
    Checkpoint,
    EarlyStopping,
    FitState,
    History,
    ProgressBar,
    SyncStop,
    TimeBudget,
    TrainConfig,
    TrainData,
    Trainer,
    TrainHooks,
)
from cvbench.errors import UserError
from cvbench.tasks.retinopathy.methods import UnfreezeBody
from tests.test_engine import InterruptAt

torch.set_num_threads(1)


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        return self.head(self.body(x))


def _data(n=24, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 6, 6, 3), dtype=np.uint8)
    y = np.arange(n) % 4
    return TrainData(x, torch.as_tensor(y), y)


def _trainer(tmp_path=None, model=None, callbacks=(), **kw):
    torch.manual_seed(0)
    ckpt = str(tmp_path / "ck.pt") if tmp_path is not None else None
    cfg = TrainConfig(**{"epochs": 2, "batch_size": 8, "lr": 0.05, "device": "cpu", "progress": False,
                         "checkpoint_path": ckpt, **kw})
    return Trainer(model or TinyNet(), cfg, callbacks=list(callbacks))


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def _state(**kw):
    return FitState(**{"epochs": 5, "steps_per_epoch": 3, **kw})


def _end_epoch(cb, state, trainer=None, **metrics):
    state.metrics = {"train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.0, "val_acc": float("nan"),
                     "lr": 0.1, **metrics}
    cb.on_epoch_end(trainer, state)
    state.epoch += 1


# ------------------------------------------------------------------- FitState & the base class


def test_fit_state_first_stop_wins_and_round_trips():
    state = _state()
    state.request_stop("time_budget")
    state.request_stop("early_stopping")
    assert state.stop_reason == "time_budget"
    state.epoch, state.steps, state.elapsed = 2, 9, 1.5
    saved = state.state_dict()
    assert saved["finished"] and saved["stop_reason"] == "time_budget"
    again = _state()
    again.load_state_dict(saved)
    assert (again.epoch, again.steps, again.elapsed, again.stop_reason) == (3, 9, 1.5, "time_budget")
    running = _state()
    running.load_state_dict(_state().state_dict())  # not finished: no stop reason comes back
    assert running.stop_reason is None and running.epoch == 1


def test_fit_state_clocks_continue_from_a_resume():
    now = [100.0]
    state = _state(clock=lambda: now[0], elapsed=5.0)
    state.start_clocks()
    now[0] = 102.5
    assert state.budget_elapsed() == pytest.approx(7.5)
    assert state.wall_elapsed() >= 0.0


def test_base_callback_is_all_no_ops():
    cb, state = Callback(), _state()
    for hook in ("on_fit_start", "on_epoch_start", "on_step_end", "on_epoch_end", "on_fit_end"):
        getattr(cb, hook)(None, state)
    cb.load_state_dict({}, None)
    assert cb.state_dict() == {} and cb.key == "Callback" and state.stop_reason is None


# ------------------------------------------------------------------- built-in callbacks


def test_history_appends_one_row_per_epoch():
    state = _state()
    state.wall = 1.234
    _end_epoch(History(), state, val_acc=0.25)
    assert list(state.history) == list(CURVES)
    assert state.history["epoch"] == [1] and state.history["val_acc"] == [0.25]
    assert state.history["time_s"] == [1.23]


def test_time_budget_per_step_and_per_epoch():
    now = [0.0]
    state = _state(clock=lambda: now[0])
    state.start_clocks()
    step = TimeBudget(2.0)
    step.on_step_end(None, state)
    assert state.stop_reason is None
    now[0] = 2.0
    step.on_step_end(None, state)
    assert state.stop_reason == "time_budget"

    epochwise, state = TimeBudget(2.0, per_step=False), _state(clock=lambda: now[0])
    state.start_clocks()
    epochwise.on_step_end(None, state)  # under DDP the ranks decide together, at epoch ends
    assert state.stop_reason is None
    state.elapsed = 2.5
    epochwise.on_epoch_end(None, state)
    assert state.stop_reason == "time_budget"


def test_early_stopping_patience_best_weights_and_state():
    model = nn.Linear(2, 1)
    trainer = types.SimpleNamespace(model=model)
    cb, state = EarlyStopping(patience=2), _state()
    for acc, value in ((0.5, 1.0), (0.7, 2.0), (0.6, 3.0)):
        nn.init.constant_(model.weight, value)
        _end_epoch(cb, state, trainer, val_acc=acc)
    assert state.stop_reason is None and cb.best_epoch == 2
    _end_epoch(cb, state, trainer, val_acc=0.7)  # not better: 2 epochs since the best
    assert state.stop_reason == "early_stopping"
    restored = EarlyStopping(patience=2)
    restored.load_state_dict(cb.state_dict(), trainer)
    restored.on_fit_end(trainer, state)
    assert state.best_epoch == 2 and torch.all(model.weight == 2.0)


def test_early_stopping_without_validation_never_stops():
    cb, state = EarlyStopping(patience=1), _state()
    for _ in range(4):
        _end_epoch(cb, state, types.SimpleNamespace(model=nn.Linear(2, 1)))
    cb.on_fit_end(None, state)
    assert state.stop_reason is None and state.best_epoch is None


def test_sync_stop_takes_rank_zeros_decision(monkeypatch):
    state = _state()
    SyncStop().on_epoch_end(None, state)  # one process: unchanged
    assert state.stop_reason is None
    monkeypatch.setattr(dist_utils, "broadcast_object", lambda obj, src=0: "time_budget")
    SyncStop().on_epoch_end(None, state)
    assert state.stop_reason == "time_budget"
    monkeypatch.setattr(dist_utils, "broadcast_object", lambda obj, src=0: None)
    state.request_stop("early_stopping")  # rank 0 wants to go on: so does this rank
    SyncStop().on_epoch_end(None, state)
    assert state.stop_reason is None


def test_progress_bar_counts_steps(capsys):
    bar, state = ProgressBar("demo", every=2), _state()
    bar.on_epoch_start(None, state)
    for step in range(3):
        state.step, state.loss, state.lr = step, torch.tensor(0.5), 0.1
        bar.on_step_end(None, state)
    assert bar.bar.n == 3 and bar.bar.postfix == "loss=0.500, lr=0.1"
    bar.on_epoch_end(None, state)
    assert "demo epoch 1/5" in capsys.readouterr().err


def test_checkpoint_written_by_rank_zero_only(tmp_path):
    trainer = _trainer(tmp_path)
    state = _state()
    trainer.dist = dist_utils.DistInfo(rank=1, world_size=2)
    Checkpoint(tmp_path / "ck.pt").on_epoch_end(trainer, state)
    assert not (tmp_path / "ck.pt").exists()
    trainer.dist = dist_utils.DistInfo()
    Checkpoint(tmp_path / "ck.pt").on_epoch_end(trainer, state)
    saved = torch.load(tmp_path / "ck.pt", weights_only=True)
    assert {"model", "optimizer", "scaler", "epoch", "history", "callbacks", "config"} <= set(saved)


def test_checkpoint_resumes_a_finished_run_without_training(tmp_path):
    first = _trainer(tmp_path, early_stopping=1)
    res = first.fit(_data(), _data(8, seed=1))
    saved = torch.load(tmp_path / "ck.pt", weights_only=True)
    assert saved["callbacks"]["EarlyStopping"]["best_epoch"] == res.best_epoch
    again = _trainer(tmp_path, early_stopping=1, resume=True)
    res2 = again.fit(_data(), _data(8, seed=1))
    assert res2.resumed_from_epoch == res.epochs_run and res2.steps == res.steps
    assert res2.curves == res.curves and res2.best_epoch == res.best_epoch
    assert _same(_weights(first.model), _weights(again.model))


class Pickled:
    """Not a tensor, dict or number: a weights-only load refuses it."""


@pytest.mark.parametrize("write,reason", [
    (lambda p: p.write_bytes(b"not a checkpoint at all"), "(unreadable data: Unsupported operand"),
    (lambda p: p.write_bytes(p.read_bytes()[:200]), "(PytorchStreamReader failed reading zip archive"),
    (lambda p: p.write_bytes(b""), "(the file is empty or cut short)"),
    (lambda p: torch.save({"model": Pickled()}, p), "Pickled object, which a weights-only load refuses"),
    (lambda p: torch.save({"model": TinyNet().state_dict()}, p), "no 'optimizer' entry"),
    (lambda p: torch.save({**torch.load(p, weights_only=True), "model": {"w": torch.zeros(1)}}, p),
     "(its weights do not fit this TinyNet)"),
])
def test_bad_checkpoint_is_one_sentence(tmp_path, write, reason):
    _trainer(tmp_path, epochs=1).fit(_data())
    write(tmp_path / "ck.pt")
    with pytest.raises(UserError) as err:
        _trainer(tmp_path, epochs=2, resume=True).fit(_data())
    message = str(err.value)
    assert message.startswith(f"cannot resume from checkpoint {tmp_path / 'ck.pt'}: ")
    assert reason in message and message.endswith("; delete it to start over")
    assert "\n" not in message and len(message) < 300


# ------------------------------------------------------------------- the trainer runs them


class Recorder(Callback):
    def __init__(self):
        self.calls = []

    def on_fit_start(self, trainer, state):
        self.calls.append("fit_start")

    def on_epoch_start(self, trainer, state):
        self.calls.append(f"epoch_start {state.epoch}")

    def on_step_end(self, trainer, state):
        self.calls.append(f"step {state.epoch}.{state.step}")

    def on_epoch_end(self, trainer, state):
        self.calls.append(f"epoch_end {state.epoch} {len(state.history['epoch'])}")

    def on_fit_end(self, trainer, state):
        self.calls.append("fit_end")


class StopAfter(Callback):
    def on_epoch_end(self, trainer, state):
        state.request_stop("enough")


def test_trainer_order_hooks_and_a_callbacks_stop(tmp_path):
    recorder = Recorder()

    class Hooks(TrainHooks):
        def callbacks(self):
            return [recorder]

    torch.manual_seed(0)
    cfg = TrainConfig(epochs=3, batch_size=12, lr=0.05, device="cpu", progress=True, time_budget_s=600,
                      early_stopping=2, checkpoint_path=str(tmp_path / "ck.pt"))
    trainer = Trainer(TinyNet(), cfg, hooks=Hooks(), callbacks=[StopAfter()])
    names = [type(cb).__name__ for cb in trainer.callbacks]
    assert names == ["ProgressBar", "History", "Recorder", "StopAfter", "TimeBudget", "EarlyStopping",
                     "Checkpoint"]
    assert [type(cb).__name__ for cb in trainer._step_callbacks] == ["ProgressBar", "Recorder", "TimeBudget"]
    result = trainer.fit(_data())
    assert recorder.calls == ["fit_start", "epoch_start 0", "step 0.0", "step 0.1", "epoch_end 0 1", "fit_end"]
    assert result.stop_reason == "enough" and result.epochs_run == 1
    with pytest.raises(ValueError, match="two callbacks"):
        Trainer(TinyNet(), cfg, callbacks=[Recorder(), Recorder()])


# ------------------------------------------------------------------- unfreezing (tasks/retinopathy/methods.py)


def _frozen_net():
    torch.manual_seed(0)
    net = TinyNet()
    for p in net.body.parameters():
        p.requires_grad = False
    return net


def test_unfreeze_body_after_epochs_and_state():
    net = _frozen_net()
    optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    cb, state = UnfreezeBody(net, after=2), _state()
    _end_epoch(cb, state, types.SimpleNamespace(optimizer=optimizer))
    assert len(optimizer.param_groups) == 1 and cb.state_dict() == {"unfrozen_at": None}
    _end_epoch(cb, state, types.SimpleNamespace(optimizer=optimizer))
    assert len(optimizer.param_groups) == 2 and all(p.requires_grad for p in net.parameters())
    assert cb.state_dict() == {"unfrozen_at": 2}
    _end_epoch(cb, state, types.SimpleNamespace(optimizer=optimizer))
    assert len(optimizer.param_groups) == 2  # once

    fresh = _frozen_net()
    fresh_opt = torch.optim.SGD([p for p in fresh.parameters() if p.requires_grad], lr=0.1)
    restored = UnfreezeBody(fresh, after=2)
    restored.load_state_dict(cb.state_dict(), types.SimpleNamespace(optimizer=fresh_opt))
    assert restored.unfrozen_at == 2 and len(fresh_opt.param_groups) == 2
    fresh_opt.load_state_dict(optimizer.state_dict())  # the groups match


def test_unfreeze_resume_equals_uninterrupted(tmp_path):
    def run(*extra, **kw):
        net = _frozen_net()
        trainer = _trainer(tmp_path, model=net, callbacks=[UnfreezeBody(net, after=1), *extra], epochs=3,
                           optimizer="adam", lr=0.01, **kw)
        return trainer, trainer.fit(_data())

    full, _ = run()
    (tmp_path / "ck.pt").unlink()
    with pytest.raises(KeyboardInterrupt):
        run(InterruptAt(2))  # epochs 1-2 done, unfrozen after epoch 1, Adam state for the body
    resumed, res = run(resume=True)
    assert res.resumed_from_epoch == 2 and len(resumed.optimizer.param_groups) == 2
    assert _same(_weights(full.model), _weights(resumed.model))
