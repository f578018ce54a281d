"""The ranking model, assembled purely from a ModelPlan (architecture spec + techniques)."""

from __future__ import annotations

import torch
from torch import nn

from modelfleet.trainer.components.blocks import (
    MLP,
    CrossNetwork,
    DotInteraction,
    HashedEmbeddings,
    SelfAttentionBlock,
    TaskHeads,
)
from modelfleet.trainer.techniques.catalogue import ModelPlan, interaction_layout


class RankingModel(nn.Module):
    def __init__(self, plan: ModelPlan, sparse_embeddings: bool = False):
        super().__init__()
        self.sparse_embeddings = sparse_embeddings and plan.n_sparse > 0
        arch = plan.architecture
        lay = interaction_layout(plan)
        self.kind = arch.interaction.kind
        self.has_dense = plan.n_dense > 0
        self.embeddings = (
            HashedEmbeddings(plan.n_sparse, arch.embedding.buckets, arch.embedding.dim, sparse_embeddings)
            if plan.n_sparse
            else None
        )
        self.bottom = (
            MLP(plan.n_dense, arch.bottom_mlp, "bottom" in plan.mlp_layernorm, plan.dropout)
            if self.has_dense
            else None
        )
        self.project = (
            nn.Linear(lay["bottom_out"], lay["dim"], bias=False) if lay["project"] else None
        )
        it = arch.interaction
        self.interaction: nn.Module
        if it.kind == "dot":
            self.interaction = DotInteraction(lay["tokens"], self.has_dense)
        elif it.kind == "dcnv2":
            self.interaction = CrossNetwork(lay["flat"], it.layers)
        elif it.kind == "lowrank":
            self.interaction = CrossNetwork(lay["flat"], it.layers, rank=it.rank)
        elif it.kind == "attention":
            self.interaction = nn.Sequential(
                *(SelfAttentionBlock(lay["dim"], it.heads) for _ in range(it.layers))
            )
        else:
            self.interaction = nn.Identity()
        self.over = MLP(lay["out"], arch.over_arch, "over" in plan.mlp_layernorm, plan.dropout)
        self.heads = TaskHeads(self.over.out_dim, len(arch.tasks))

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        # dense: [B, n_dense] float, sparse: [B, S] int64 -> logits [B, n_tasks]
        parts: list[torch.Tensor] = []  # token vectors [B, 1 or S, D]
        dense_out = self.bottom(dense) if self.bottom is not None else None  # [B, bottom_out]
        if self.kind in ("dot", "attention"):
            if dense_out is not None:
                v = self.project(dense_out) if self.project is not None else dense_out
                parts.append(v.unsqueeze(1))
            if self.embeddings is not None:
                parts.append(self.embeddings(sparse))
            tokens = torch.cat(parts, dim=1)  # [B, T, D]
            if self.kind == "dot":
                x = self.interaction(tokens)
            else:
                x = self.interaction(tokens).flatten(1)  # [B, T*D]
        else:
            flat = []
            if dense_out is not None:
                flat.append(dense_out)
            if self.embeddings is not None:
                flat.append(self.embeddings(sparse).flatten(1))  # [B, S*D]
            x = self.interaction(torch.cat(flat, dim=1))  # [B, N]
        return self.heads(self.over(x))
