"""Residual vector quantization: EMA update, k-means init, dead-code replacement,
commitment loss, quantizer dropout, split RVQ and moshi's codes for the same codebooks."""

from __future__ import annotations

import torch

from dsm.codecs.quantization import (
    Codebook,
    ResidualVectorQuantizer,
    SplitResidualVectorQuantizer,
    kmeans,
)
from dsm.codecs.testing import randomize_codebooks


def _ready_codebook(bins: int = 8, dim: int = 4, **options) -> Codebook:
    codebook = Codebook(dim, bins, **options)
    codebook.embedding_sum.copy_(torch.randn(bins, dim))
    codebook.cluster_usage.fill_(1.0)
    codebook.initialized.fill_(1.0)
    return codebook


def test_ema_update_moves_sums_and_usage_by_decay():
    codebook = _ready_codebook(decay=0.9, check_unused_every=1000).train()
    old_sum = codebook.embedding_sum.clone()
    old_usage = codebook.cluster_usage.clone()
    x = torch.randn(32, 4)
    codes = codebook.encode(x)
    codebook(x)
    counts = torch.bincount(codes, minlength=8).float()
    sums = torch.zeros(8, 4).index_add_(0, codes, x)
    torch.testing.assert_close(codebook.cluster_usage, 0.9 * old_usage + 0.1 * counts)
    torch.testing.assert_close(codebook.embedding_sum, 0.9 * old_sum + 0.1 * sums)


def test_ema_converges_to_cluster_means():
    centers = torch.tensor([[5.0, 0.0], [-5.0, 0.0], [0.0, 5.0]])
    codebook = Codebook(2, 3, decay=0.5, check_unused_every=1000)
    codebook.embedding_sum.copy_(centers + 1.0)  # offset centroids, usage 1
    codebook.initialized.fill_(1.0)
    codebook.train()
    for _ in range(30):
        x = centers.repeat(20, 1) + 0.01 * torch.randn(60, 2)
        codebook(x)
    torch.testing.assert_close(codebook.embedding, centers, atol=0.05, rtol=0)


def test_eval_mode_does_not_learn():
    codebook = _ready_codebook().eval()
    before = codebook.embedding_sum.clone()
    codebook(torch.randn(16, 4))
    torch.testing.assert_close(codebook.embedding_sum, before)


def test_kmeans_init_finds_clusters():
    centers = torch.randn(4, 8) * 10
    x = centers.repeat_interleave(50, 0) + 0.1 * torch.randn(200, 8)
    codebook = Codebook(8, 16, check_unused_every=1000).train()
    assert codebook.initialized.item() == 0
    codebook(x)
    assert codebook.initialized.item() == 1
    # every true center has a codeword next to it (up to the EMA step just after init)
    distances = torch.cdist(centers, codebook.embedding)
    assert distances.min(dim=1).values.max() < 0.5
    # with spare clusters every center is found; every centroid is a mean of its points
    centroids, counts = kmeans(x, 16)
    assert counts.sum().item() == 200
    assert torch.cdist(centers, centroids).min(dim=1).values.max() < 0.5
    assignment = torch.cdist(x, centroids).argmin(dim=1)
    for index in range(16):
        if counts[index] > 0:
            torch.testing.assert_close(centroids[index], x[assignment == index].mean(0))


def test_dead_codes_are_replaced_by_batch_vectors():
    codebook = _ready_codebook(bins=8, dim=4, check_unused_every=1, threshold_usage_ratio=0.1)
    codebook.cluster_usage.copy_(torch.tensor([10.0, 10, 10, 10, 10, 10, 1e-4, 1e-4]))
    codebook.train()
    x = torch.randn(64, 4)
    before = codebook.embedding.clone()
    _, _, metrics = codebook(x)
    assert metrics["dead_codes"].item() == 2 / 8
    # replaced centroids are vectors of the batch; the live ones only moved by the EMA
    for index in (6, 7):
        assert not torch.allclose(codebook.embedding[index], before[index])
        assert codebook.cluster_usage[index] > 0.5  # reset to a uniform share (then EMA)
    # the sampled vector is exactly one of the inputs before the EMA step: redo it by hand
    fresh = _ready_codebook(bins=8, dim=4, check_unused_every=1)
    fresh.cluster_usage.copy_(torch.tensor([10.0, 10, 10, 10, 10, 10, 1e-4, 1e-4]))
    fraction = fresh.replace_dead_codes(x)
    assert fraction.item() == 0.25
    for index in (6, 7):
        distance = (x - fresh.embedding[index]).norm(dim=1)
        assert distance.min() < 1e-5
    assert torch.equal(fresh.cluster_usage[:6], torch.full((6,), 10.0))


def test_commitment_loss_and_straight_through():
    rvq = ResidualVectorQuantizer(dimension=4, n_q=2, bins=16).train()
    for layer in rvq.layers:
        layer.embedding_sum.copy_(torch.randn(16, 4))
        layer.initialized.fill_(1.0)
    x = torch.randn(2, 4, 5, requires_grad=True)
    rvq.eval()
    codes = rvq.encode(x.detach())
    first = rvq.layers[0].decode(codes[:, 0].reshape(-1))
    rows = x.detach().transpose(1, 2).reshape(-1, 4)
    second = rvq.layers[1].decode(codes[:, 1].reshape(-1))
    expected = (torch.nn.functional.mse_loss(rows, first)
                + torch.nn.functional.mse_loss(rows - first, second)) / 2
    rvq.train()
    for layer in rvq.layers:
        layer.check_unused_every = 1000
    out = rvq(x)
    torch.testing.assert_close(out.commitment_loss, expected)
    assert torch.equal(out.codes, codes)
    out.quantized.sum().backward()  # straight-through: d(sum)/dx = 1
    torch.testing.assert_close(x.grad, torch.ones_like(x))


def test_quantizer_dropout_varies_codebooks_in_training_only():
    rvq = ResidualVectorQuantizer(dimension=4, n_q=6, bins=8, q_dropout=True)
    for layer in rvq.layers:
        layer.embedding_sum.copy_(torch.randn(8, 4))
        layer.initialized.fill_(1.0)
    x = torch.randn(1, 4, 3)
    rvq.train()
    used = {rvq(x).codes.shape[1] for _ in range(40)}
    assert len(used) > 2 and min(used) >= 1 and max(used) <= 6
    rvq.eval()
    assert {rvq(x).codes.shape[1] for _ in range(5)} == {6}


def test_encode_decode_roundtrip_and_num_codebooks():
    rvq = ResidualVectorQuantizer(dimension=4, n_q=3, bins=32, input_dimension=6,
                                  output_dimension=6).eval()
    for layer in rvq.layers:
        layer.embedding_sum.copy_(torch.randn(32, 4))
    x = torch.randn(2, 6, 7)
    codes = rvq.encode(x)
    assert codes.shape == (2, 3, 7) and codes.dtype == torch.long
    torch.testing.assert_close(rvq.decode(codes), rvq(x).quantized)
    rvq.set_num_codebooks(2)
    assert torch.equal(rvq.encode(x), codes[:, :2])


def test_more_codebooks_reduce_error():
    rvq = ResidualVectorQuantizer(dimension=8, n_q=4, bins=64).train()
    x = torch.randn(4, 8, 64)
    for _ in range(4):  # each codebook initialises once the one before it is ready
        rvq(x)
    rvq.eval()
    errors = []
    for n in range(1, 5):
        rvq.set_num_codebooks(n)
        errors.append((rvq.decode(rvq.encode(x)) - x).pow(2).mean().item())
    assert errors == sorted(errors, reverse=True) and errors[-1] < 0.5 * errors[0]


def test_split_rvq_matches_moshi():
    from moshi.quantization import SplitResidualVectorQuantizer as MoshiSplit

    ref = MoshiSplit(dimension=8, n_q=5, bins=32, input_dimension=12, output_dimension=12)
    randomize_codebooks(ref)
    ref.eval()
    ours = SplitResidualVectorQuantizer(dimension=8, n_q=5, bins=32, input_dimension=12,
                                        output_dimension=12).eval()
    state = {
        k.replace(".vq.layers.", ".layers.").replace("._codebook._initialized", ".initialized")
        .replace("._codebook.", "."): v
        for k, v in ref.state_dict().items()
    }
    ours.load_state_dict(state)
    x = torch.randn(3, 12, 10)
    with torch.no_grad():
        codes = ours.encode(x)
        assert torch.equal(codes, ref.encode(x))
        torch.testing.assert_close(ours.decode(codes), ref.decode(codes), atol=1e-6, rtol=1e-5)
        ours.set_num_codebooks(3)
        ref.set_num_codebooks(3)
        assert torch.equal(ours.encode(x), ref.encode(x))
