"""The two-tower retrieval model, in one file.

    user  -> UserTower -> u (unit vector) \
                                            score = <u, v> / temperature   (trained with sampled softmax)
    item  -> ItemTower -> v (unit vector) /

Both towers are an `EntityTower`: embed each categorical column (own vocabulary, index 0 the
out-of-vocabulary bucket), project text and image embeddings, concatenate with numerical
features and any tower-specific extras, run a small MLP with a linear skip path, L2-normalize.
Retrieval is by inner product of unit vectors (= cosine), the quantity training optimises.

The item-id embedding table is shared: the item tower reads an item's own row, the user tower
mean-pools the rows of the user's recent positive items (the history summary). So users and
items that co-occur are pulled together through the same parameters, the collaborative signal
a two-tower needs to compete with item-item models such as EASE. Category-node embeddings are
shared the same way between item categories and users' stated preferences.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class TwoTowerConfig:
    # architecture
    embedding_dim: int = 64  # output size of both towers: the retrieval space
    id_dim: int = 64  # item- and user-id embedding width (item tower input, user history summary, user id)
    categorical_dim: int = 16  # width of each categorical / category-node embedding
    content_dim: int = 64  # width text and image embeddings are projected to
    dim_ratio: int = 2  # MLP hidden width = embedding_dim * dim_ratio
    hidden_layers: int = 1  # hidden layers of each tower's MLP (0 = linear)
    dropout: float = 0.1
    use_item_id: bool = True  # False: item tower is content-only (cold-start items score like warm ones)
    # a free embedding per known user beside the history summary (matrix-factorization capacity). Off by default:
    # it raised MovieLens validation recall (0.143 -> 0.147) but test recall fell on time splits (synthetic 0.088 -> 0.063)
    use_user_id: bool = False
    user_id_dropout: float = 0.1  # training: share of examples whose user id is hidden, so new users stay well served
    # learn how much each history position (newest .. oldest) counts in the summary. Off by default for the same reason
    history_position_weights: bool = False
    # input sizes, taken from the fitted preprocessing
    n_item_ids: int = 0
    n_user_ids: int = 0
    history_length: int = 0  # columns of the history input (preprocessing's max_history)
    n_category_nodes: int = 0
    item_numerical: int = 0
    item_categories: list[int] = field(default_factory=list)
    item_text_dim: int = 0
    item_image_dim: int = 0
    user_numerical: int = 0
    user_categories: list[int] = field(default_factory=list)
    user_text_dim: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


class EntityTower(nn.Module):
    """Features of one entity -> unit vector of size `d_model`.

    Seed-compatible signature; `num_of_categories` may be one vocabulary size or one per column.
    `url_image` carries image embeddings (the seed passed the image this way). `extra_dim` /
    `extra` take tower-specific dense inputs (history summary, id embedding, multi-hot pools).
    """

    def __init__(
        self,
        num_numerical: int,
        num_of_categories: int | list[int],
        d_model: int,
        text_embed_dim: int = 0,
        image_embed_dim: int = 0,
        dim_ratio: int = 2,
        *,
        categorical_dim: int = 16,
        content_dim: int = 64,
        extra_dim: int = 0,
        hidden_layers: int = 1,
        dropout: float = 0.1,
    ):
        super().__init__()
        vocabularies = [num_of_categories] if isinstance(num_of_categories, int) else list(num_of_categories)
        self.categorical = nn.ModuleList(nn.Embedding(size, categorical_dim) for size in vocabularies)
        self.text = (
            nn.Sequential(nn.LayerNorm(text_embed_dim), nn.Linear(text_embed_dim, content_dim))
            if text_embed_dim
            else None
        )
        self.image = (
            nn.Sequential(nn.LayerNorm(image_embed_dim), nn.Linear(image_embed_dim, content_dim))
            if image_embed_dim
            else None
        )
        in_dim = (
            num_numerical
            + categorical_dim * len(vocabularies)
            + (content_dim if text_embed_dim else 0)
            + (content_dim if image_embed_dim else 0)
            + extra_dim
        )
        hidden = d_model * dim_ratio
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(hidden_layers):
            layers += [nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout)]
            width = hidden
        layers.append(nn.Linear(width, d_model))
        self.mlp = nn.Sequential(*layers)
        self.skip = nn.Linear(in_dim, d_model, bias=False)  # keeps strong inputs (ids) one linear map from the output
        self.input_dropout = nn.Dropout(dropout)

    def forward(
        self,
        numerical_features: torch.Tensor,  # [B, num_numerical] float
        categorical_features: torch.Tensor,  # [B, n_categorical] long
        text_features: torch.Tensor | None = None,  # [B, text_embed_dim]
        url_image: torch.Tensor | None = None,  # [B, image_embed_dim] image embeddings
        extra: torch.Tensor | None = None,  # [B, extra_dim]
    ) -> torch.Tensor:  # [B, d_model], unit L2 norm
        parts = [numerical_features]
        parts += [emb(categorical_features[:, j]) for j, emb in enumerate(self.categorical)]
        if self.text is not None:
            parts.append(self.text(text_features))
        if self.image is not None:
            parts.append(self.image(url_image))
        if extra is not None:
            parts.append(extra)
        x = self.input_dropout(torch.cat(parts, dim=1))  # [B, in_dim]
        return F.normalize(self.mlp(x) + self.skip(x), dim=-1)


class ItemTower(nn.Module):
    """Item -> unit vector: category levels and nodes, price/discount/rating, text, image, optional id."""

    def __init__(
        self, config: TwoTowerConfig, item_id_embedding: nn.Embedding, category_node_embedding: nn.EmbeddingBag
    ):
        super().__init__()
        self.use_item_id = config.use_item_id
        self.item_id_embedding = item_id_embedding  # shared with the user tower
        self.category_node_embedding = category_node_embedding  # shared with the user tower
        self.entity = EntityTower(
            config.item_numerical,
            config.item_categories,
            config.embedding_dim,
            config.item_text_dim,
            config.item_image_dim,
            config.dim_ratio,
            categorical_dim=config.categorical_dim,
            content_dim=config.content_dim,
            extra_dim=config.categorical_dim + (config.id_dim if config.use_item_id else 0),
            hidden_layers=config.hidden_layers,
            dropout=config.dropout,
        )

    def forward(
        self,
        id_index: torch.Tensor,  # [B] long, 0 = no id embedding
        numerical: torch.Tensor,  # [B, item_numerical]
        categorical: torch.Tensor,  # [B, len(item_categories)]
        category_tokens: torch.Tensor,  # [B, T] long, 0 = padding
        text: torch.Tensor | None = None,  # [B, item_text_dim]
        image: torch.Tensor | None = None,  # [B, item_image_dim]
    ) -> torch.Tensor:  # [B, embedding_dim]
        extras = [self.category_node_embedding(category_tokens)]  # [B, categorical_dim]
        if self.use_item_id:
            extras.append(self.item_id_embedding(id_index))  # [B, id_dim]
        return self.entity(numerical, categorical, text, image, torch.cat(extras, dim=1))


class UserTower(nn.Module):
    """User -> unit vector: demographics, stated preferences (nodes + text), and a history summary.

    The history summary has two views of the user's recent positive items: the mean of their
    id embeddings (collaborative: who liked the same items) and the mean of their content
    (category-level embeddings shared with the item tower, standardized price/rating/recency),
    which stays informative when items have few interactions each. The content of every item
    in the id vocabulary is held in buffers, so it travels inside the weights file.
    """

    def __init__(
        self,
        config: TwoTowerConfig,
        item_id_embedding: nn.Embedding,
        category_node_embedding: nn.EmbeddingBag,
        item_category_embeddings: nn.ModuleList,
    ):
        super().__init__()
        self.item_id_embedding = item_id_embedding
        self.category_node_embedding = category_node_embedding
        self.item_category_embeddings = item_category_embeddings  # the item tower's, one per taxonomy level
        n_levels = len(config.item_categories)
        self.register_buffer("history_item_categorical", torch.zeros(config.n_item_ids + 1, n_levels, dtype=torch.long))
        self.register_buffer("history_item_numerical", torch.zeros(config.n_item_ids + 1, config.item_numerical))
        self.user_id_dropout = config.user_id_dropout
        # log-weight of each history column (the newest item is the last column); zeros = a plain mean
        self.history_position_logit = (
            nn.Parameter(torch.zeros(config.history_length))
            if config.history_position_weights and config.history_length
            else None
        )
        self.user_id_embedding = None
        if config.use_user_id and config.n_user_ids:
            self.user_id_embedding = nn.Embedding(config.n_user_ids + 1, config.id_dim, padding_idx=0)
            nn.init.normal_(self.user_id_embedding.weight, std=0.05)
            with torch.no_grad():
                self.user_id_embedding.weight[0].zero_()  # unknown users: the history and features speak alone
        self.entity = EntityTower(
            config.user_numerical,
            config.user_categories,
            config.embedding_dim,
            config.user_text_dim,
            0,
            config.dim_ratio,
            categorical_dim=config.categorical_dim,
            content_dim=config.content_dim,
            extra_dim=(
                config.categorical_dim * (1 + n_levels)
                + config.id_dim
                + config.item_numerical
                + 1
                + (config.id_dim if self.user_id_embedding is not None else 0)
            ),
            hidden_layers=config.hidden_layers,
            dropout=config.dropout,
        )

    def forward(
        self,
        numerical: torch.Tensor,  # [B, user_numerical]
        categorical: torch.Tensor,  # [B, len(user_categories)]
        preference_tokens: torch.Tensor,  # [B, P] long, 0 = padding
        history: torch.Tensor,  # [B, L] long item-id rows, 0 = padding (all zeros = cold start)
        text: torch.Tensor | None = None,  # [B, user_text_dim]
        user_id_index: torch.Tensor | None = None,  # [B] long, 0 = unknown user
    ) -> torch.Tensor:  # [B, embedding_dim]
        present = (history > 0).float()  # [B, L]
        lengths = present.sum(dim=1, keepdim=True)  # [B, 1]
        counted = present  # [B, L] how much each history item counts
        if self.history_position_logit is not None:
            counted = present * self.history_position_logit[-history.shape[1] :].exp()
        total = counted.sum(dim=1, keepdim=True).clamp(min=1e-6)  # [B, 1]
        ids = F.embedding_bag(
            history, self.item_id_embedding.weight, mode="sum", per_sample_weights=counted, padding_idx=0
        )  # [B, id_dim]
        ids = ids / total.sqrt()  # sqrt-length scaling: long histories stay confident
        weights = counted / total  # [B, L] weighted mean over present items
        levels = self.history_item_categorical[history]  # [B, L, n_levels]
        content = [
            F.embedding_bag(
                levels[:, :, j], table.weight, mode="sum", per_sample_weights=weights
            )  # [B, categorical_dim]
            for j, table in enumerate(self.item_category_embeddings)
        ]
        content.append(torch.einsum("bl,bln->bn", weights, self.history_item_numerical[history]))  # [B, item_numerical]
        extras = [
            self.category_node_embedding(preference_tokens),
            ids,
            *content,
            torch.log1p(lengths) / math.log(100.0),
        ]
        if self.user_id_embedding is not None:
            if user_id_index is None:
                user_id_index = torch.zeros(len(history), dtype=torch.long, device=history.device)
            elif self.training and self.user_id_dropout:
                hidden = torch.rand(user_id_index.shape, device=user_id_index.device) < self.user_id_dropout
                user_id_index = user_id_index.masked_fill(hidden, 0)
            extras.append(self.user_id_embedding(user_id_index))  # [B, id_dim]
        return self.entity(numerical, categorical, text, None, torch.cat(extras, dim=1))


class TwoTower(nn.Module):
    """Owns the shared embedding tables and both towers."""

    def __init__(self, config: TwoTowerConfig):
        super().__init__()
        self.config = config
        self.item_id_embedding = nn.Embedding(config.n_item_ids + 1, config.id_dim, padding_idx=0)
        nn.init.normal_(self.item_id_embedding.weight, std=0.05)
        with torch.no_grad():
            self.item_id_embedding.weight[0].zero_()
        self.category_node_embedding = nn.EmbeddingBag(
            config.n_category_nodes + 1, config.categorical_dim, mode="mean", padding_idx=0
        )
        self.item_tower = ItemTower(config, self.item_id_embedding, self.category_node_embedding)
        self.user_tower = UserTower(
            config, self.item_id_embedding, self.category_node_embedding, self.item_tower.entity.categorical
        )

    @torch.no_grad()
    def set_history_item_content(self, categorical: torch.Tensor, numerical: torch.Tensor) -> None:
        """Stores the content of each id-vocabulary item (row k = id row k, row 0 = padding) for history summaries."""
        self.user_tower.history_item_categorical.copy_(categorical)  # [n_item_ids + 1, n_levels]
        self.user_tower.history_item_numerical.copy_(numerical)  # [n_item_ids + 1, item_numerical]

    def encode_users(self, **user_inputs) -> torch.Tensor:
        return self.user_tower(**user_inputs)

    def encode_items(self, **item_inputs) -> torch.Tensor:
        return self.item_tower(**item_inputs)

    def forward(self, user_inputs: dict, item_inputs: dict) -> torch.Tensor:
        """[B_users, B_items] cosine similarities."""
        return self.encode_users(**user_inputs) @ self.encode_items(**item_inputs).T
