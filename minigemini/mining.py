"""Patch info mining (paper Eq. 1) and the HD layout of high-resolution views.

Each LR token is a query that attends only to its own window of the HR map (p x p cells, p = 8 in the release),
so the LLM sees the same number of visual tokens whatever the HR resolution.
"""

import torch
import torch.nn.functional as F
from torch import nn


def tokens_per_side(lr_features: torch.Tensor) -> int:
    """(B, N, C) LR tokens -> n, the side of their n x n grid (N must be a square)."""
    n = round(lr_features.shape[1] ** 0.5)
    if n**2 != lr_features.shape[1]:
        raise ValueError(f"patch info mining needs a square grid of LR tokens, got {lr_features.shape[1]}")
    return n


def split_windows(hr_map: torch.Tensor, tokens_per_side: int) -> torch.Tensor:
    """(B, C, S, S) -> (B, n*n, p*p, C): the p x p window of each of the n x n LR tokens, row-major."""
    batch, channels, height, width = hr_map.shape
    n = tokens_per_side
    if height != width or height % n:
        raise ValueError(f"HR map of {height}x{width} cells cannot be split into {n}x{n} square windows")
    p = height // n
    windows = hr_map.permute(0, 2, 3, 1).reshape(batch, n, p, n, p, channels)
    return windows.permute(0, 1, 3, 2, 4, 5).reshape(batch, n * n, p * p, channels)


def hr_views(hr_map: torch.Tensor, image_grid: int, image_global: bool) -> torch.Tensor:
    """Cut each image's HR map into the views its LR tokens mine from.

    (B, C, S, S) -> (B * V, C, S / g, S / g), views per image ordered [global, crop(0,0), crop(0,1), ...]: crops are
    the grid cells row-major; the global view is the whole map downsampled (bilinear) to a crop's size.
    """
    if image_grid == 1:
        return hr_map
    batch, channels, size, _ = hr_map.shape
    g, cell = image_grid, size // image_grid
    views = (
        hr_map.reshape(batch, channels, g, cell, g, cell)
        .permute(0, 2, 4, 1, 3, 5)
        .reshape(batch, g * g, channels, cell, cell)
    )
    if image_global:
        whole = F.interpolate(hr_map, size=(cell, cell), mode="bilinear", align_corners=False)
        views = torch.cat([whole.unsqueeze(1), views], dim=1)
    return views.flatten(0, 1)


def mine_views(
    mining: "PatchInfoMining", lr_features: torch.Tensor, hr_map: torch.Tensor, image_grid: int, image_global: bool
) -> torch.Tensor:
    """Patch info mining for every view of each image: (B * V, N, C) LR tokens, (B, C_aux, S, S) HR map -> (B * V, N, C).

    Views per image are ordered [global, crop(0,0), crop(0,1), ...], crops being the grid cells row-major; a crop's
    tokens mine their windows of that cell of the map, the global view's tokens the whole map downsampled (bilinear) to
    a cell's size.  A crop's windows are windows of the whole map, so all crops' tokens, tiled back into one
    (g n) x (g n) grid, mine the whole map in one call: no crop is ever copied out of the (large) HD map.
    Equal to `mining(lr_features, hr_views(hr_map, ...))`, the literal layout kept for tests and benchmarks.
    """
    if image_grid == 1:
        return mining(lr_features, hr_map)
    batch, g = hr_map.shape[0], image_grid
    views = lr_features.unflatten(0, (batch, -1))  # (B, V, N, C)
    n, channels = tokens_per_side(lr_features), lr_features.shape[-1]
    crops = views[:, int(image_global) :].reshape(batch, g, g, n, n, channels)  # (b, r, c, i, j, C)
    tiled = crops.permute(0, 1, 3, 2, 4, 5).reshape(batch, g * n * g * n, channels)  # row r*n+i, column c*n+j
    mined = mining(tiled, hr_map).reshape(batch, g, n, g, n, channels).permute(0, 1, 3, 2, 4, 5)
    mined = mined.reshape(batch, g * g, n * n, channels)
    if image_global:
        cell = hr_map.shape[-1] // g
        whole = F.interpolate(hr_map, size=(cell, cell), mode="bilinear", align_corners=False)
        mined = torch.cat([mining(views[:, 0], whole).unsqueeze(1), mined], dim=1)
    return mined.flatten(0, 1)


def cell_statistics(cells: torch.Tensor, eps: float, rows_per_chunk: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """LayerNorm's per-cell mean and 1 / std over channels: (B, S, S, C) -> two (B, S, S) in the cells' dtype.

    Computed in fp32 a few rows at a time, so a bf16 map is never copied whole to fp32 (reductions with dtype=float32
    would make that copy: twice the bf16 map's size); for an fp32 map the chunks are views and nothing is copied.
    """
    means, mean_squares = [], []
    for rows in cells.split(rows_per_chunk, dim=1):
        means.append(rows.mean(dim=-1, dtype=torch.float32))
        mean_squares.append(torch.linalg.vector_norm(rows, dim=-1, dtype=torch.float32).square() / cells.shape[-1])
    mean, mean_square = torch.cat(means, dim=1), torch.cat(mean_squares, dim=1)
    rstd = torch.rsqrt((mean_square - mean.square()).clamp_min(0) + eps)
    return mean.to(cells.dtype), rstd.to(cells.dtype)


class PatchInfoMining(nn.Module):
    """T = X + softmax(q k^T / sqrt(d)) v, one query per LR token over its HR window (single head, no dropout).

    q = Linear(LN(X)), k = Linear(LN(window)), v = Linear(LN(window)); the output keeps X's shape.

    `forward` computes exactly this in a cheaper order. Both k and v start from the same normalised cells n (the two
    LayerNorms differ only in their affine part), so:
      * q.k = ((W_k^T q) * g_k) . n + (a per-token constant, which softmax ignores): the key projection folds into
        the query, and the C_aux -> d projection of every HR cell is never computed;
      * the attention weights sum to one, so sum(a * v) = W_v(g_v * sum(a * n) + b_v') + c: the value projection runs
        once per token on the pooled cells instead of once per cell.
    `forward_reference` is the literal form, kept for tests and benchmarks.
    """

    def __init__(self, hidden_size: int, aux_hidden_size: int, mining_hidden_size: int):
        super().__init__()
        self.query = nn.Sequential(nn.LayerNorm(hidden_size), nn.Linear(hidden_size, mining_hidden_size))
        self.key = nn.Sequential(nn.LayerNorm(aux_hidden_size), nn.Linear(aux_hidden_size, mining_hidden_size))
        self.value = nn.Sequential(nn.LayerNorm(aux_hidden_size), nn.Linear(aux_hidden_size, hidden_size))

    def forward(self, lr_features: torch.Tensor, hr_map: torch.Tensor) -> torch.Tensor:
        """lr_features (B, N, C), hr_map (B, C_aux, S, S) with S a multiple of sqrt(N) -> (B, N, C)."""
        n = tokens_per_side(lr_features)
        batch, channels, size, _ = hr_map.shape
        if hr_map.shape[-1] != size or size % n:
            raise ValueError(f"HR map of {tuple(hr_map.shape[-2:])} cells cannot be split into {n}x{n} square windows")
        p = size // n
        key_norm, key_proj = self.key
        value_norm, value_proj = self.value
        # Never write a normalised copy of the map: LayerNorm(w) = (w - mean) * rstd per cell, so both contractions run
        # on the raw cells and the per-cell statistics (two cheap reductions) are applied to their small results.
        # The ConvNeXt map is channels-last in memory already, so this permute is free.
        raw = hr_map.to(lr_features.dtype).permute(0, 2, 3, 1)  # (B, S, S, C_aux)
        mean, rstd = cell_statistics(raw, key_norm.eps)
        cells = raw.reshape(batch, n, p, n, p, channels)  # (b, i, y, j, x, c): cell (y, x) of token (i, j)

        query = self.query(lr_features)
        folded = (query @ key_proj.weight) * key_norm.weight / query.shape[-1] ** 0.5  # (B, N, C_aux)
        folded = folded.reshape(batch, n, 1, n, channels, 1)
        # score = folded . (w - mean) * rstd, per cell of each token's window
        scores = (cells @ folded).reshape(batch, n, p, n, p) - mean.reshape(batch, n, p, n, p) * folded.sum(-2).reshape(
            batch, n, 1, n, 1
        )
        scores = scores * rstd.reshape(batch, n, p, n, p)
        weights = scores.permute(0, 1, 3, 2, 4).reshape(batch, n, n, p * p).softmax(-1)  # (b, i, j, y*x)
        # pooled normalised cells = sum(a * rstd * w) - sum(a * rstd * mean)
        scaled = weights.reshape(batch, n, n, p, p) * rstd.reshape(batch, n, p, n, p).permute(0, 1, 3, 2, 4)
        offset = (scaled * mean.reshape(batch, n, p, n, p).permute(0, 1, 3, 2, 4)).sum(dim=(-2, -1))  # (b, i, j)
        scaled = scaled.permute(0, 1, 3, 2, 4).reshape(batch, n, p, n, 1, p)  # (b, i, y, j, 1, x)
        pooled = (scaled @ cells).sum(dim=2).reshape(batch, n * n, channels) - offset.reshape(batch, n * n, 1)
        return lr_features + value_proj(pooled * value_norm.weight + value_norm.bias)

    def forward_reference(self, lr_features: torch.Tensor, hr_map: torch.Tensor) -> torch.Tensor:
        """Eq. 1 as written: project every HR cell to a key and a value, attend, add."""
        windows = split_windows(hr_map.to(lr_features.dtype), tokens_per_side(lr_features))
        query = self.query(lr_features).unsqueeze(2)  # (B, N, 1, d)
        # N acts as the attention "heads" axis: every token attends over its own p*p cells only.
        mined = F.scaled_dot_product_attention(query, self.key(windows), self.value(windows))
        return lr_features + mined.squeeze(2)
