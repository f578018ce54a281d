"""The model's building blocks, each implemented once with explicit arguments.

Shape comments use B = batch, S = sparse features, T = tokens (S, plus 1 when there are dense
features), D = embedding dim, N = width of the flat interaction input.
"""

from __future__ import annotations

import torch
from torch import nn


class EmbeddingTables(nn.Module):
    """One `sizes[i] x width` table per categorical feature, stored as one tensor.

    Feature i's ids arrive in [0, sizes[i]) (the data layer maps raw values to ids); one tensor
    for all features, with per-feature row offsets, keeps the lookup a single gather instead of
    S small ones. `width` is the embedding dim plus, with a wide part, one column per task: the
    wide weights of a value ride in its embedding row, so they cost no gather of their own. With
    `sparse=True` the gradient holds only the looked-up rows.
    """

    def __init__(self, sizes: list[int] | tuple[int, ...], dim: int, sparse: bool = False, init_std: float = 1e-4,
                 extra: int = 0):
        super().__init__()
        self.n_features, self.dim, self.sparse = len(sizes), dim, sparse
        self.weight = nn.Parameter(torch.empty(sum(sizes), dim + extra))
        # a fixed scale, not one shrinking with the table size: resizing the id space should not
        # change how far from zero training starts
        nn.init.normal_(self.weight, 0.0, init_std)
        starts = torch.tensor([0, *sizes[:-1]], dtype=torch.int64).cumsum(0)
        self.register_buffer("offsets", starts, persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # ids: [B, S] int64, column i in [0, sizes[i]) -> [B, S, dim + extra]
        return nn.functional.embedding(ids + self.offsets, self.weight, sparse=self.sparse)


class MLP(nn.Module):
    """Linear (-> LayerNorm) -> ReLU (-> Dropout) per width.

    The norm comes before the activation, as in DeepCTR's and FuxiCTR's MLPs: normalising the
    ReLU's output instead (this trainer's earlier order) made NE worse on the real fleets
    (docs/trainer.md, "Technique defaults").
    """

    def __init__(self, in_dim: int, widths: list[int], layernorm: bool = False, dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        for w in widths:
            layers.append(nn.Linear(d, w))
            if layernorm:
                layers.append(nn.LayerNorm(w))
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            d = w
        self.net = nn.Sequential(*layers)
        self.out_dim = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, in_dim] -> [B, widths[-1]] (identity when widths is empty)
        return self.net(x)


class DotInteraction(nn.Module):
    """DLRM: pairwise dot products of the T tokens, strict upper triangle, plus the dense vector."""

    def __init__(self, n_tokens: int, include_dense: bool):
        super().__init__()
        self.include_dense = include_dense
        rows, cols = torch.triu_indices(n_tokens, n_tokens, offset=1)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # tokens: [B, T, D] with the dense vector (if any) first
        z = torch.bmm(tokens, tokens.transpose(1, 2))  # [B, T, T]
        pairs = z[:, self.rows, self.cols]  # [B, T(T-1)/2]
        if self.include_dense:
            return torch.cat([tokens[:, 0], pairs], dim=1)  # [B, D + T(T-1)/2]
        return pairs


class CrossNetwork(nn.Module):
    """DCNv2 cross layers: x_{l+1} = x0 * (W_l x_l + b_l) + x_l; W full or low-rank U_l V_l."""

    def __init__(self, dim: int, layers: int, rank: int | None = None):
        super().__init__()
        if rank is None:
            self.maps = nn.ModuleList(nn.Linear(dim, dim) for _ in range(layers))
        else:
            self.maps = nn.ModuleList(
                nn.Sequential(nn.Linear(dim, rank, bias=False), nn.Linear(rank, dim))
                for _ in range(layers)
            )

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        # x0: [B, N] -> [B, N]
        x = x0
        for m in self.maps:
            x = x0 * m(x) + x
        return x


class SelfAttentionBlock(nn.Module):
    """Multi-head self-attention over feature tokens with a residual connection."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention heads ({heads}) must divide embedding dim ({dim})")
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, T, D]
        b, t, d = x.shape
        qkv = self.qkv(x).view(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # each [B, H, T, D/H]
        # plain matmuls (not the fused SDPA kernel) so FLOPs are counted the same everywhere
        scores = torch.matmul(q, k.transpose(-1, -2)) * self.head_dim**-0.5  # [B, H, T, T]
        ctx = torch.matmul(scores.softmax(dim=-1), v)  # [B, H, T, D/H]
        return x + self.out(ctx.transpose(1, 2).reshape(b, t, d))  # [B, T, D]


class FactorizationMachine(nn.Module):
    """Second-order FM term over the S field embeddings: sum_{i<j} <e_i, e_j>, computed as
    ((sum e)^2 - sum e^2) / 2 (Rendle 2010), which is elementwise work only."""

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        # emb: [B, S, D] -> [B, 1]
        square_of_sum = emb.sum(dim=1).pow(2)
        sum_of_squares = emb.pow(2).sum(dim=1)
        return 0.5 * (square_of_sum - sum_of_squares).sum(dim=1, keepdim=True)


class Wide(nn.Module):
    """The linear (wide) part: one weight per task for every categorical value and every numeric
    feature, summed into each task's logit (Wide&Deep's wide part, DeepFM's first-order term).
    The categorical weights are the extra columns of the embedding rows (EmbeddingTables)."""

    def __init__(self, n_dense: int, n_tasks: int, init_std: float):
        super().__init__()
        self.dense = nn.Linear(n_dense, n_tasks, bias=False) if n_dense else None
        if self.dense is not None:
            nn.init.normal_(self.dense.weight, 0.0, init_std)

    def forward(self, dense: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor | float:
        # dense: [B, n_dense], rows: [B, S, n_tasks] looked-up weights -> logits [B, n_tasks]
        out = self.dense(dense) if self.dense is not None else 0.0
        return out + rows.sum(dim=1) if rows is not None else out


class TaskHeads(nn.Module):
    """One logit per task on the shared representation."""

    def __init__(self, in_dim: int, n_tasks: int):
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(in_dim, 1) for _ in range(n_tasks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, in_dim] -> logits [B, n_tasks]
        return torch.cat([h(x) for h in self.heads], dim=1)
