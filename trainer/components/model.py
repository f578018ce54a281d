"""The ranking model, assembled purely from a ModelPlan (architecture spec + techniques).

The standard CTR architectures are settings of one spec:
- DLRM: interaction dot, a bottom MLP ending at embedding.dim;
- DCNv2 stacked (TorchRec's DLRM-DCN): interaction dcnv2, over-arch on the cross output;
- DCNv2 parallel (DeepCTR's DCN): dcnv2 with structure parallel, no bottom MLP, wide;
- DeepFM: interaction fm, wide, no bottom MLP;  Wide&Deep: interaction concat, wide, no bottom MLP.
"""

from __future__ import annotations

import torch
from torch import nn

from modelfleet.trainer.components.blocks import (
    MLP,
    CrossNetwork,
    DotInteraction,
    EmbeddingTables,
    FactorizationMachine,
    SelfAttentionBlock,
    TaskHeads,
    Wide,
)
from modelfleet.trainer.techniques.catalogue import ModelPlan, interaction_layout


class RankingModel(nn.Module):
    def __init__(self, plan: ModelPlan, sparse_embeddings: bool = False):
        super().__init__()
        self.sparse_embeddings = sparse_embeddings and plan.n_sparse > 0
        arch = plan.architecture
        emb = arch.embedding
        lay = interaction_layout(plan)
        it = arch.interaction
        self.kind = it.kind
        self.parallel = it.structure == "parallel"
        self.has_dense = plan.n_dense > 0
        self.l2 = emb.l2
        n_tasks = len(arch.tasks)
        self.embeddings = (
            EmbeddingTables(plan.tables, emb.dim, sparse_embeddings, emb.init_std, n_tasks if arch.wide else 0)
            if plan.n_sparse
            else None
        )
        self.bottom = (
            MLP(plan.n_dense, arch.bottom_mlp, "bottom" in plan.mlp_layernorm, plan.dropout)
            if self.has_dense and arch.bottom_mlp
            else None
        )
        self.project = (
            nn.Linear(lay["bottom_out"], lay["dim"], bias=False) if lay["project"] else None
        )
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
        else:  # concat, fm
            self.interaction = nn.Identity()
        self.fm = FactorizationMachine() if it.kind == "fm" else None
        self.over = MLP(lay["over_in"], arch.over_arch, "over" in plan.mlp_layernorm, plan.dropout)
        self.heads = TaskHeads(lay["head_in"], n_tasks)
        self.wide = Wide(plan.n_dense, n_tasks, emb.init_std) if arch.wide else None

    def sparse_parameters(self) -> list[nn.Parameter]:
        """The table whose gradient is sparse (row-wise updates), when sparse_embeddings."""
        return [self.embeddings.weight] if self.sparse_embeddings else []

    def forward(
        self, dense: torch.Tensor, sparse: torch.Tensor, penalty: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        # dense: [B, n_dense] float, sparse: [B, S] int64 -> logits [B, n_tasks]
        # (with penalty=True also the L2 term of the looked-up embedding and wide vectors)
        emb = rows = None
        if self.embeddings is not None:
            looked = self.embeddings(sparse)  # [B, S, D (+ n_tasks wide weights)]
            emb = looked[..., : self.embeddings.dim] if self.wide is not None else looked  # [B, S, D]
            rows = looked[..., self.embeddings.dim :] if self.wide is not None else None
        dense_out = (self.bottom(dense) if self.bottom is not None else dense) if self.has_dense else None
        if self.kind in ("dot", "attention"):
            parts: list[torch.Tensor] = []  # token vectors [B, 1 or S, D]
            if dense_out is not None:
                v = self.project(dense_out) if self.project is not None else dense_out
                parts.append(v.unsqueeze(1))
            if emb is not None:
                parts.append(emb)
            tokens = torch.cat(parts, dim=1)  # [B, T, D]
            x = self.interaction(tokens)
            if self.kind == "attention":
                x = x.flatten(1)  # [B, T*D]
            h = self.over(x)
        else:
            flat_parts = [p for p in (dense_out, emb.flatten(1) if emb is not None else None) if p is not None]
            flat = torch.cat(flat_parts, dim=1) if len(flat_parts) > 1 else flat_parts[0]  # [B, N]
            x = self.interaction(flat)
            h = torch.cat([x, self.over(flat)], dim=1) if self.parallel else self.over(x)
        logits = self.heads(h)
        if self.fm is not None:
            logits = logits + self.fm(emb)
        if self.wide is not None:
            logits = logits + self.wide(dense, rows)
        if not penalty:
            return logits
        reg = logits.new_zeros(())
        if self.l2 and self.embeddings is not None:  # embedding and wide weights alike
            reg = looked.pow(2).sum() * (self.l2 / len(sparse))
        return logits, reg
