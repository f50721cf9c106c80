"""Opt-in (`pytest -m reference`): drq_sac.py's update against the authors' DRQAgent (denisyarats/drq, drq.py), one
update from the same weights, the same batch, the same augmented copies and the same action noise: critic loss,
every critic and actor gradient, and every parameter after the optimizer steps and the target update agree to
float32 rounding. The authors' code runs in its own process (tests/reference/drq_authors_update.py) under
$DRQ_PYTHON, a Python with their dependencies (hydra-core 0.11, omegaconf, kornia); $DRQ_CHECKOUT is their
repository at dd040f1. Our code never imports theirs. README, "Checking an update against the reference code"."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import drq_sac

pytestmark = pytest.mark.reference
CHECKOUT = os.environ.get("DRQ_CHECKOUT")
HERE = Path(__file__).resolve().parent


@pytest.mark.skipif(not CHECKOUT, reason="set DRQ_CHECKOUT to a checkout of denisyarats/drq (and DRQ_PYTHON)")
def test_one_drq_update_equals_the_authors(tmp_path):
    torch.manual_seed(0)
    b, a = 16, 2
    agent = drq_sac.make_agent((9, 84, 84), a, torch.device("cpu"), channels_last=False)
    obs, next_obs = (torch.randint(0, 256, (b, 9, 84, 84), dtype=torch.uint8) for _ in range(2))
    obs_aug, next_obs_aug = drq_sac.random_shift(obs), drq_sac.random_shift(next_obs)
    action, reward = torch.rand(b, a) * 2 - 1, torch.randn(b, 1)
    not_done = (torch.rand(b, 1) > 0.2).float()
    batch = {"obs": obs, "obs_aug": obs_aug, "next_obs": next_obs, "next_obs_aug": next_obs_aug, "action": action,
             "reward": reward, "not_done": not_done, "critic_seed": 11, "actor_seed": 12,
             "critic": [p.detach().clone() for p in agent.critic.parameters()],
             "actor": [p.detach().clone() for p in agent.actor.parameters()]}
    torch.save(batch, tmp_path / "in.pt")
    python = os.environ.get("DRQ_PYTHON", sys.executable)
    subprocess.run([python, str(HERE / "reference" / "drq_authors_update.py"), CHECKOUT, str(tmp_path / "in.pt"),
                    str(tmp_path / "out.pt")], check=True, timeout=600)
    theirs = torch.load(tmp_path / "out.pt", weights_only=True)

    # The authors draw one N(0, 1) per next-state copy (two rsample calls, seeded here), and one for the actor.
    torch.manual_seed(11)
    noise = torch.cat([torch.empty(b, a).normal_(), torch.empty(b, a).normal_()])
    grads = {}
    step = agent.critic_optimizer.step
    agent.critic_optimizer.step = lambda: (grads.update(critic=[p.grad.clone() for p in agent.critic.parameters()]),
                                           step())
    metrics = drq_sac.update_critic(agent, torch.cat([obs, obs_aug]), action, reward, torch.cat([next_obs, next_obs_aug]),
                                    not_done, 0.99, k=2, m=2, sum_over_copies=True, noise=noise)
    torch.manual_seed(12)
    actor_step = agent.actor_optimizer.step
    agent.actor_optimizer.step = lambda: (grads.update(actor=[torch.zeros_like(p) if p.grad is None else p.grad.clone()
                                                              for p in agent.actor.parameters()]), actor_step())
    drq_sac.update_actor_and_alpha(agent, obs)
    drq_sac.soft_update(agent.critic_target, agent.critic, 0.01)

    # the tied convs learn from the critic only: the authors' actor step leaves them without a gradient, and ours
    # does not hold them (their .grad is still the critic's), so the actor's gradients are compared on the rest
    conv = [name.startswith("encoder.convs.") for name, _ in agent.actor.named_parameters()]
    assert all(not theirs["actor_grads"][i].any() for i, c in enumerate(conv) if c)
    grads["actor"] = [g for g, c in zip(grads["actor"], conv) if not c]
    theirs["actor_grads"] = [g for g, c in zip(theirs["actor_grads"], conv) if not c]
    close = dict(rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(metrics["losses/critic_loss"], theirs["logged"]["train_critic/loss"].float(), **close)
    for name, ours, ref in [("critic grad", grads["critic"], theirs["critic_grads"]),
                            ("actor grad", grads["actor"], theirs["actor_grads"])]:
        assert len(ours) == len(ref), name
        for i, (x, y) in enumerate(zip(ours, ref)):
            assert (x - y).abs().max() <= 1e-4 * y.abs().max().clamp(min=1e-6), f"{name} {i}"
    # Adam's first step moves each weight by ~lr * g / (|g| + eps): where |g| is near eps (1e-8) the gradients'
    # float32 rounding is amplified up to a fraction of one step (lr = 1e-3); everywhere else it stays at rounding
    for name, ours, ref in [("critic", list(agent.critic.parameters()), theirs["critic"]),
                            ("actor", list(agent.actor.parameters()), theirs["actor"]),
                            ("critic target", list(agent.critic_target.parameters()), theirs["critic_target"])]:
        assert len(ours) == len(ref), name
        for i, (x, y) in enumerate(zip(ours, ref)):
            diff = (x.detach() - y).abs()
            assert diff.max() <= 1e-3 and (diff > 1e-6).float().mean() <= 1e-3, f"{name} {i}"
    torch.testing.assert_close(agent.log_alpha.detach(), theirs["log_alpha"].float(), **close)
