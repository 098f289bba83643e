"""LaSER's losses (lab.losses.laser) against direct formulas, and where their gradients go."""

import math

import torch
import torch.nn.functional as F

from lab.losses.laser import in_batch_infonce, laser_objective, score_kl, trajectory_kl

torch.manual_seed(0)
B, G, D, K = 3, 2, 8, 3


def _unit(*shape):
    return F.normalize(torch.randn(*shape, dtype=torch.float64), dim=-1)


def test_in_batch_infonce_is_the_direct_formula():
    q, d = _unit(B, D), _unit(B * G, D)
    tau = 0.02
    want = 0.0
    for i in range(B):
        s = [float(q[i] @ d[j]) / tau for j in range(B * G)]
        m = max(s)
        want += -(s[i * G] - (m + math.log(sum(math.exp(x - m) for x in s))))
    assert abs(float(in_batch_infonce(q, d, tau)) - want / B) < 1e-6


def test_score_kl_is_batchmean_kl_of_teacher_to_student():
    s, t = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    tau = 0.05
    ps, pt = torch.softmax(s / tau, -1), torch.softmax(t / tau, -1)
    want = float((pt * (pt.log() - ps.log())).sum() / 4)
    assert abs(float(score_kl(s, t, tau)) - want) < 1e-6
    assert float(score_kl(t, t, tau)) < 1e-9


def test_trajectory_kl_normalises_states_and_averages_over_b_times_k_rows():
    ls, es, d = torch.randn(B, K, D, dtype=torch.float64) * 3, torch.randn(B, K, D, dtype=torch.float64), _unit(6, D)
    want = 0.0
    for b in range(B):
        for j in range(K):
            s = F.normalize(ls[b, j], dim=-1) @ d.T / 0.05
            t = F.normalize(es[b, j], dim=-1) @ d.T / 0.05
            pt = torch.softmax(t, -1)
            want += float((pt * (pt.log() - torch.log_softmax(s, -1))).sum())
    assert abs(float(trajectory_kl(ls, es, d, 0.05)) - want / (B * K)) < 1e-6


def test_objective_weights_and_parts():
    q, x, d = _unit(B, D), _unit(B, D), _unit(B * G, D)
    ls, es = torch.randn(B, K, D, dtype=torch.float64), torch.randn(B, K, D, dtype=torch.float64)
    out = laser_objective(q, d, q_explicit=x, latent_states=ls, explicit_states=es)
    want = (in_batch_infonce(q, d, 0.02) + in_batch_infonce(x, d, 0.02) + 10 * score_kl(q @ d.T, x @ d.T, 0.02)
            + 0.1 * trajectory_kl(ls, es, d, 0.05))
    assert torch.allclose(out["loss"], want)
    basic = laser_objective(q, d, q_explicit=x, latent_states=ls, explicit_states=es, w_explicit=0, w_kl=0, w_mid=0)
    assert torch.allclose(basic["loss"], in_batch_infonce(q, d, 0.02)) and float(basic["kl"]) == 0.0


def test_kl_terms_give_the_teacher_zero_gradient_and_explicit_infonce_a_nonzero_one():
    q, x, d = _unit(B, D).requires_grad_(), _unit(B, D).requires_grad_(), _unit(B * G, D)
    ls, es = torch.randn(B, K, D, dtype=torch.float64, requires_grad=True), torch.randn(B, K, D, dtype=torch.float64,
                                                                                         requires_grad=True)
    kl = laser_objective(q, d, q_explicit=x, latent_states=ls, explicit_states=es, w_latent=0, w_explicit=0)
    kl["loss"].backward()
    assert x.grad is None or float(x.grad.abs().max()) == 0.0          # teacher side detached
    assert es.grad is None or float(es.grad.abs().max()) == 0.0
    assert float(q.grad.abs().max()) > 0 and float(ls.grad.abs().max()) > 0
    x.grad = None
    cl = laser_objective(q, d, q_explicit=x, w_latent=0, w_kl=0, w_mid=0)
    cl["loss"].backward()
    assert float(x.grad.abs().max()) > 0                               # explicit InfoNCE trains the shared weights
