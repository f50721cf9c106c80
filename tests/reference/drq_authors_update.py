"""Runs ONE update of the authors' DRQAgent (denisyarats/drq, drq.py) on a given batch, with given weights and
random draws, and saves its loss, gradients and parameters. Run by tests/test_reference_drq.py under a Python that
has the authors' dependencies (hydra-core 0.11, omegaconf, kornia); it never runs in the project's own code.

    python drq_authors_update.py CHECKOUT IN.pt OUT.pt
"""
import os
import sys

import torch


def main(checkout: str, inp: str, out: str) -> None:
    sys.path.insert(0, os.path.realpath(checkout))
    import hydra
    from omegaconf import OmegaConf

    import drq  # noqa: F401  (the authors' module, from the checkout)

    data = torch.load(inp, weights_only=True)
    cfg = OmegaConf.load(os.path.join(checkout, "config.yaml"))
    cfg.device, cfg.batch_size = "cpu", data["obs"].shape[0]
    cfg.agent.params.obs_shape = list(data["obs"].shape[1:])
    cfg.agent.params.action_shape = [data["action"].shape[1]]
    cfg.agent.params.action_range = [-1.0, 1.0]
    agent = hydra.utils.instantiate(cfg.agent)
    assert type(agent).__module__ == "drq"
    for module, state in ((agent.critic, data["critic"]), (agent.actor, data["actor"])):
        params = list(module.parameters())
        assert len(params) == len(state), (len(params), len(state))
        with torch.no_grad():
            for p, v in zip(params, state):
                assert p.shape == v.shape, (p.shape, v.shape)
                p.copy_(v)
    agent.critic_target.load_state_dict(agent.critic.state_dict())

    logged = {}

    class Logger:  # the update logs its losses through log(); images, histograms and params are dropped
        def log(self, key, value, step):
            logged[key] = torch.as_tensor(value).detach().clone()

        def __getattr__(self, name):
            return lambda *args, **kwargs: None

    f = lambda t: t.float()  # the authors' replay hands out float pixels in [0, 255]
    captured = {}

    def capture_grads(name, optimizer, module):
        original = optimizer.step

        def step():
            captured[name] = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in module.parameters()]
            original()
        optimizer.step = step

    capture_grads("critic_grads", agent.critic_optimizer, agent.critic)
    capture_grads("actor_grads", agent.actor_optimizer, agent.actor)
    torch.manual_seed(data["critic_seed"])
    agent.update_critic(f(data["obs"]), f(data["obs_aug"]), data["action"], data["reward"], f(data["next_obs"]),
                        f(data["next_obs_aug"]), data["not_done"], Logger(), 0)
    torch.manual_seed(data["actor_seed"])
    agent.update_actor_and_alpha(f(data["obs"]), Logger(), 0)
    import utils  # the authors' utils.py, from the checkout

    utils.soft_update_params(agent.critic, agent.critic_target, agent.critic_tau)
    torch.save({**captured, "logged": logged, "critic": [p.detach() for p in agent.critic.parameters()],
                "actor": [p.detach() for p in agent.actor.parameters()],
                "critic_target": [p.detach() for p in agent.critic_target.parameters()],
                "log_alpha": agent.log_alpha.detach()}, out)


if __name__ == "__main__":
    main(*sys.argv[1:])
