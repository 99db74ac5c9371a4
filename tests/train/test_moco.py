import math

import pytest
import torch
import torch.nn.functional as F
from edge_encoder.train.backbones import BackboneConfig, build_backbone
from edge_encoder.train.checkpoint import plain_backbone_state
from edge_encoder.train.moco import (
    SplitBatchNorm2d,
    build_moco,
    in_batch_contrastive_loss,
    infonce_logits,
    infonce_loss,
)
from torch import nn

TINY = BackboneConfig(width=4)


def _moco(**kw: object) -> torch.nn.Module:
    args = dict(method="moco_v2", proj_hidden_dim=0, proj_dim=8, pred_hidden_dim=0, queue_size=10,
                temperature=0.2, symmetric=False, split_bn_groups=1)
    torch.manual_seed(0)
    return build_moco(TINY, **{**args, **kw})


def test_infonce_hand_computed() -> None:
    # One query, positive key at cos 0.6, two negatives at cos 0.8 and 0.0, temperature 0.5:
    # loss = -log(e^{1.2} / (e^{1.2} + e^{1.6} + e^{0}))
    q = torch.tensor([[1.0, 0.0]])
    k = torch.tensor([[0.6, 0.8]])
    queue = torch.tensor([[0.8, 0.6], [0.0, 1.0]])
    expected = -math.log(math.exp(1.2) / (math.exp(1.2) + math.exp(1.6) + math.exp(0.0)))
    assert infonce_loss(q, k, queue, 0.5).item() == pytest.approx(expected, rel=1e-6)


def test_infonce_is_fp32_for_bf16_inputs_and_averages_queries() -> None:
    q = F.normalize(torch.randn(4, 8), dim=1)
    k = F.normalize(torch.randn(4, 8), dim=1)
    queue = F.normalize(torch.randn(6, 8), dim=1)
    loss = infonce_loss(q.bfloat16(), k.bfloat16(), queue.bfloat16(), 0.2)
    assert loss.dtype == torch.float32
    per_query = [infonce_loss(q[i:i + 1], k[i:i + 1], queue, 0.2) for i in range(4)]
    assert infonce_loss(q, k, queue, 0.2).item() == pytest.approx(torch.stack(per_query).mean().item(), rel=1e-6)


def test_logits_and_losses_are_fp32_under_bf16_autocast() -> None:
    """Under bf16 autocast a matmul runs in bf16 even on fp32 inputs; the InfoNCE logits and both losses must not:
    they equal a float64 reference to fp32 accuracy (bf16 logits at tau 0.07 are off by ~1e-2)."""
    torch.manual_seed(0)
    q, k = F.normalize(torch.randn(16, 64), dim=1), F.normalize(torch.randn(16, 64), dim=1)
    queue = F.normalize(torch.randn(512, 64), dim=1)
    t = 0.07
    q64, k64, queue64 = q.double(), k.double(), queue.double()
    ref_logits = torch.cat([(q64 * k64).sum(1, keepdim=True), q64 @ queue64.T], dim=1) / t
    ref_loss = F.cross_entropy(ref_logits, torch.zeros(16, dtype=torch.long))
    ref_v3 = F.cross_entropy(q64 @ k64.T / 0.2, torch.arange(16)) * 0.4
    with torch.autocast("cpu", dtype=torch.bfloat16):
        naive = q @ queue.T / t  # what the logits were before: cast to bf16 by autocast
        logits, loss = infonce_logits(q, k, queue, t), infonce_loss(q, k, queue, t)
        v3 = in_batch_contrastive_loss(q, k, 0.2)
    assert naive.dtype == torch.bfloat16 and (naive.double() - ref_logits[:, 1:]).abs().max() > 1e-3
    assert logits.dtype == loss.dtype == v3.dtype == torch.float32
    torch.testing.assert_close(logits.double(), ref_logits, rtol=0, atol=1e-5)
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-6)
    assert v3.item() == pytest.approx(ref_v3.item(), rel=1e-6)


def test_v3_loss_hand_computed() -> None:
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    t = 0.5
    # row 0: logits (2, 1.2) target 0; row 1: logits (0, 1.6) target 1; scaled by 2t = 1
    row0 = -math.log(math.exp(2.0) / (math.exp(2.0) + math.exp(1.2)))
    row1 = -math.log(math.exp(1.6) / (math.exp(0.0) + math.exp(1.6)))
    assert in_batch_contrastive_loss(q, k, t).item() == pytest.approx((row0 + row1) / 2 * 2 * t, rel=1e-6)


def test_key_encoder_gets_no_gradients_and_follows_ema() -> None:
    model = _moco()
    assert all(not p.requires_grad for p in model.key_parameters())
    # make query and key encoders differ so the EMA is visible
    with torch.no_grad():
        for p in model.query_parameters():
            p.add_(torch.randn_like(p) * 0.1)
    k_before = [p.detach().clone() for p in model.key_parameters()]
    q_before = [p.detach().clone() for p in model.query_parameters(include_predictor=False)]
    m = 0.9
    loss = model(torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16), m)
    loss.backward()
    assert all(p.grad is None for p in model.key_parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.query_parameters())
    for k_new, k_old, q_old in zip(model.key_parameters(), k_before, q_before):
        torch.testing.assert_close(k_new, k_old * m + q_old * (1 - m), rtol=0, atol=1e-6)  # fp32 rounding only


def test_queue_is_fifo_and_wraps_around() -> None:
    model = _moco(queue_size=10)  # K = 10 does not divide the batch of 4
    # key j of batch i carries the value 10 * i + j in every coordinate
    keys = [(10.0 * i + torch.arange(4.0))[:, None].expand(4, 8).clone() for i in range(1, 4)]
    model.enqueue(keys[0])
    model.enqueue(keys[1])
    assert int(model.queue_ptr) == 8
    model.enqueue(keys[2])
    # 12 keys into 10 slots: batch 1 -> 0-3, batch 2 -> 4-7, batch 3 -> 8, 9 then wraps to 0, 1
    assert model.queue[:, 0].tolist() == [32, 33, 12, 13, 20, 21, 22, 23, 30, 31]
    assert int(model.queue_ptr) == 2


def test_queue_larger_batch_keeps_the_newest_keys() -> None:
    model = _moco(queue_size=4)
    model.enqueue(torch.arange(6, dtype=torch.float32)[:, None].expand(6, 8).clone())  # keys 0..5, K = 4
    assert sorted(model.queue[:, 0].tolist()) == [2.0, 3.0, 4.0, 5.0]
    assert int(model.queue_ptr) == 2  # 6 writes into 4 slots


def test_forward_enqueues_keys_symmetric_enqueues_each_once() -> None:
    model = _moco(queue_size=20, symmetric=True)
    model(torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16), 0.99)
    assert int(model.queue_ptr) == 8  # two key batches of 4, each once


def test_symmetric_queue_loss_is_the_sum_of_both_directions() -> None:
    """As the MoCo CIFAR demo: loss = loss_12 + loss_21 (a sum, not a mean), against the queue before the step."""
    import copy

    torch.manual_seed(1)
    model = _moco(queue_size=20, symmetric=True)
    im_q, im_k = torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)
    twin = copy.deepcopy(model)  # the same weights, queue and BN state; m = 1 leaves the key encoder as it is
    loss = model(im_q, im_k, 1.0)
    with torch.no_grad():
        q1, q2, k1, k2 = twin.encode_query(im_q), twin.encode_query(im_k), twin.encode_key(im_q), twin.encode_key(im_k)
        expected = infonce_loss(q1, k2, twin.queue, 0.2) + infonce_loss(q2, k1, twin.queue, 0.2)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_v3_heads_are_the_reference_resnet_ones() -> None:
    """moco-v3 MoCo_ResNet: projector _build_mlp(2, ...) with a last BN without affine, predictor _build_mlp(2, ...,
    last_bn=False); no biases."""
    model = _moco(method="moco_v3", proj_hidden_dim=16, proj_dim=8, pred_hidden_dim=12)
    kinds = lambda m: [type(x).__name__ for x in m]  # noqa: E731
    assert kinds(model.projector_q) == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    assert kinds(model.predictor) == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert [(m.in_features, m.out_features) for m in model.predictor if isinstance(m, nn.Linear)] == [(8, 12), (12, 8)]
    assert all(m.bias is None for m in (*model.projector_q, *model.predictor) if isinstance(m, nn.Linear))
    assert not model.projector_q[-1].affine


def test_v3_has_predictor_and_no_queue() -> None:
    model = _moco(method="moco_v3", proj_hidden_dim=16, pred_hidden_dim=16)
    assert model.predictor is not None and not hasattr(model, "queue")
    loss = model(torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16), 0.99)
    loss.backward()
    assert torch.isfinite(loss)


def test_split_bn_normalises_groups_independently() -> None:
    torch.manual_seed(0)
    bn = SplitBatchNorm2d(3, num_splits=2).train()
    x = torch.randn(8, 3, 4, 4)
    y = bn(x)
    x2 = x.clone()
    x2[5] += 5.0  # sample 5 is in group 1 (the second block of 4)
    y2 = bn(x2)
    torch.testing.assert_close(y2[:4], y[:4])  # group 0 untouched
    assert not torch.allclose(y2[6], y[6])  # group 1 statistics changed
    # each group is normalised with its own statistics, also in NHWC (the layout the trainer runs on CPU)
    for group in (slice(0, 4), slice(4, 8)):
        ref = F.batch_norm(x[group], None, None, training=True, eps=bn.eps)
        torch.testing.assert_close(y[group], ref, rtol=1e-5, atol=1e-5)
    y_nhwc = bn(x.contiguous(memory_format=torch.channels_last))
    assert y_nhwc.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y_nhwc, y, rtol=1e-5, atol=1e-5)


def test_split_bn_running_statistics_are_the_mean_of_the_groups_updates() -> None:
    torch.manual_seed(0)
    bn = SplitBatchNorm2d(3, num_splits=2).train()
    x = torch.randn(8, 3, 4, 4) * 3.0 + 1.0
    bn(x)
    groups = [nn.BatchNorm2d(3).train() for _ in range(2)]
    for group, block in zip(groups, x.chunk(2)):
        group(block)
    torch.testing.assert_close(bn.running_mean, (groups[0].running_mean + groups[1].running_mean) / 2)
    torch.testing.assert_close(bn.running_var, (groups[0].running_var + groups[1].running_var) / 2)


def test_key_shuffle_puts_keys_in_other_groups_than_queries() -> None:
    """The known trap: shuffling on one device changes nothing with plain BN. With split BN it does."""
    model = _moco(split_bn_groups=4)
    model.generator = torch.Generator().manual_seed(1)
    im = torch.randn(16, 3, 16, 16)
    k_shuffled = model.encode_key(im)
    model.shuffle_keys = False
    k_plain = model.encode_key(im)
    assert not torch.allclose(k_shuffled, k_plain, atol=1e-4)  # the groups (statistics) changed
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(1))
    query_group = torch.arange(16) // 4  # 4 blocks of 4
    key_group = torch.argsort(perm) // 4  # sample i sits at position argsort(perm)[i] of the shuffled batch
    assert (query_group != key_group).any()


def test_split_bn_exports_as_plain_bn_with_identical_eval_outputs() -> None:
    model = _moco(split_bn_groups=4)
    for _ in range(3):  # move the running statistics away from their initial values
        model(torch.randn(16, 3, 16, 16), torch.randn(16, 3, 16, 16), 0.99)
    plain = build_backbone(TINY)
    plain.load_state_dict(plain_backbone_state(model.backbone_q))
    assert not any(isinstance(m, SplitBatchNorm2d) for m in plain.modules())
    assert isinstance(plain.bn1, nn.BatchNorm2d)
    x = torch.randn(5, 3, 16, 16)
    model.backbone_q.eval()
    plain.eval()
    with torch.no_grad():
        torch.testing.assert_close(plain(x), model.backbone_q(x), rtol=0, atol=0)
