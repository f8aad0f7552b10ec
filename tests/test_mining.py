import math

import pytest
import torch
import torch.nn.functional as F

from minigemini.mining import PatchInfoMining, cell_statistics, hr_views, mine_views, split_windows


def reference_mining(mining: PatchInfoMining, lr: torch.Tensor, hr_map: torch.Tensor) -> torch.Tensor:
    """Eq. 1 token by token: LR token (i, j) attends over HR cells [i*p:(i+1)*p, j*p:(j+1)*p]."""
    batch, num_tokens, _ = lr.shape
    n = math.isqrt(num_tokens)
    p = hr_map.shape[-1] // n
    out = torch.empty_like(lr)
    for b in range(batch):
        for i in range(n):
            for j in range(n):
                window = hr_map[b, :, i * p : (i + 1) * p, j * p : (j + 1) * p].reshape(hr_map.shape[1], -1).T
                q = mining.query(lr[b, i * n + j])
                k = mining.key(window)
                v = mining.value(window)
                att = torch.softmax(k @ q / math.sqrt(q.shape[-1]), dim=0)
                out[b, i * n + j] = lr[b, i * n + j] + att @ v
    return out


def randomised_mining(hidden: int, aux: int, width: int) -> PatchInfoMining:
    mining = PatchInfoMining(hidden, aux, width)
    with torch.no_grad():  # non-trivial LayerNorm affines so the test sees them
        for param in mining.parameters():
            param.add_(torch.randn_like(param) * 0.5)
    return mining


@pytest.mark.parametrize("hr_side", [8, 16])
def test_mining_equals_plain_eq1(hr_side):
    torch.manual_seed(0)
    mining = randomised_mining(hidden=12, aux=20, width=6)
    lr = torch.randn(2, 16, 12)  # 4x4 tokens
    hr_map = torch.randn(2, 20, hr_side, hr_side)
    expected = reference_mining(mining, lr, hr_map)
    actual = mining(lr, hr_map)
    assert actual.shape == lr.shape  # same token count whatever the HR size
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mining.forward_reference(lr, hr_map), expected, atol=1e-5, rtol=1e-5)


def test_folded_mining_has_the_gradients_of_the_plain_form():
    torch.manual_seed(0)
    mining = randomised_mining(hidden=12, aux=20, width=6)
    lr = torch.randn(2, 16, 12, requires_grad=True)
    hr_map = torch.randn(2, 20, 8, 8, requires_grad=True)
    grads = []
    for forward in (mining.forward, mining.forward_reference):
        mining.zero_grad()
        lr.grad = hr_map.grad = None
        (forward(lr, hr_map) * torch.linspace(-1, 1, 12)).sum().backward()
        # The key biases only shift every score of a token equally: no gradient (None) when folded, ~0 when plain.
        params = [p.grad if p.grad is not None else torch.zeros_like(p) for p in mining.parameters()]
        grads.append([lr.grad.clone(), hr_map.grad.clone()] + [g.clone() for g in params])
    for folded, plain in zip(*grads):
        torch.testing.assert_close(folded, plain, atol=1e-5, rtol=1e-4)


def test_split_windows_is_row_major_over_tokens_and_cells():
    hr_map = torch.arange(2 * 4 * 4).float().reshape(1, 2, 4, 4)  # 2 channels, 4x4 map, 2x2 tokens
    windows = split_windows(hr_map, tokens_per_side=2)
    assert windows.shape == (1, 4, 4, 2)
    # token 1 is the top-right window; its cells in row-major order, channel 0
    assert windows[0, 1, :, 0].tolist() == [2.0, 3.0, 6.0, 7.0]
    assert windows[0, 2, :, 1].tolist() == [24.0, 25.0, 28.0, 29.0]


def test_split_windows_rejects_indivisible_map():
    with pytest.raises(ValueError, match="cannot be split"):
        split_windows(torch.zeros(1, 3, 10, 10), tokens_per_side=4)


def test_hd_views_order_global_then_crops_row_major():
    torch.manual_seed(0)
    hr_map = torch.randn(2, 3, 8, 8)
    views = hr_views(hr_map, image_grid=2, image_global=True)
    assert views.shape == (10, 3, 4, 4)
    expected_global = F.interpolate(hr_map, size=(4, 4), mode="bilinear", align_corners=False)
    for b in range(2):
        torch.testing.assert_close(views[5 * b], expected_global[b])
        torch.testing.assert_close(views[5 * b + 1], hr_map[b, :, :4, :4])
        torch.testing.assert_close(views[5 * b + 2], hr_map[b, :, :4, 4:])
        torch.testing.assert_close(views[5 * b + 3], hr_map[b, :, 4:, :4])
        torch.testing.assert_close(views[5 * b + 4], hr_map[b, :, 4:, 4:])
    assert hr_views(hr_map, image_grid=2, image_global=False).shape == (8, 3, 4, 4)
    assert hr_views(hr_map, image_grid=1, image_global=False) is hr_map


@pytest.mark.parametrize("image_global", [True, False])
def test_hd_mining_on_the_whole_map_equals_mining_each_cut_view(image_global):
    torch.manual_seed(0)
    mining = randomised_mining(8, 6, 4)
    views = 5 if image_global else 4
    hr_map = torch.randn(2, 16, 16, 6).permute(0, 3, 1, 2)  # channels-last in memory, as the ConvNeXt emits it
    lr = torch.randn(2 * views, 4, 8)  # 2x2 tokens per view, 4x4 cells per token window of a 8x8 crop
    with torch.no_grad():
        expected = mining.forward_reference(lr, hr_views(hr_map, image_grid=2, image_global=image_global))
        torch.testing.assert_close(mine_views(mining, lr, hr_map, 2, image_global), expected, atol=1e-5, rtol=1e-4)
        # each crop's tokens must see their own cell: mining the views in the wrong order gives another answer
        shuffled = hr_views(hr_map, image_grid=2, image_global=image_global).flip(0)
        assert not torch.allclose(mining.forward_reference(lr, shuffled), expected, atol=1e-3)


def test_cell_statistics_in_row_chunks_match_layer_norm():
    torch.manual_seed(0)
    cells = torch.randn(2, 8, 8, 5) * 3 + 1
    mean, rstd = cell_statistics(cells, eps=1e-6, rows_per_chunk=3)  # chunks of 3, 3 and 2 rows
    torch.testing.assert_close((cells - mean[..., None]) * rstd[..., None], F.layer_norm(cells, (5,), eps=1e-6))
    mean_bf16, rstd_bf16 = cell_statistics(cells.bfloat16(), eps=1e-6, rows_per_chunk=3)
    assert mean_bf16.dtype == torch.bfloat16
    torch.testing.assert_close(mean_bf16.float(), mean, atol=0.05, rtol=0.02)
    torch.testing.assert_close(rstd_bf16.float(), rstd, atol=0.01, rtol=0.02)


def test_mining_rejects_non_square_token_grid():
    mining = PatchInfoMining(4, 4, 4)
    with pytest.raises(ValueError, match="square grid"):
        mining(torch.zeros(1, 15, 4), torch.zeros(1, 4, 8, 8))
