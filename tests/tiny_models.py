"""Tiny random CLIP and Stable Diffusion models built from configs, fully offline, for tests."""

from __future__ import annotations

import string
from pathlib import Path

# Every tiny transformer here (CLIP text and vision towers, BERT) has these sizes.
TINY_TRANSFORMER = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2)


def tiny_clip_tokenizer():
    """A CLIP BPE tokenizer over single bytes (no merges): every character is its own token."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in sorted(ByteLevel.alphabet()):
        vocab.setdefault(char, len(vocab))
        vocab.setdefault(char + "</w>", len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def tiny_clip_text_config(tokenizer) -> dict:
    """The text tower shared by the tiny CLIP and the tiny Stable Diffusion's text encoder."""
    return dict(
        vocab_size=len(tokenizer),
        **TINY_TRANSFORMER,
        max_position_embeddings=77,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )


def save_tiny_clip(directory: Path) -> Path:
    """A random CLIP with 16-d projections and 32 px images, saved with its processor to `directory`."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

    tokenizer = tiny_clip_tokenizer()
    config = CLIPConfig(
        text_config=tiny_clip_text_config(tokenizer),
        vision_config=dict(image_size=32, patch_size=8, **TINY_TRANSFORMER),
        projection_dim=16,
    )
    torch.manual_seed(0)
    model = CLIPModel(config)
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    model.save_pretrained(directory)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(directory)
    return directory


def save_tiny_stable_diffusion(directory: Path) -> Path:
    """A random Stable Diffusion pipeline (UNet, VAE, CLIP text encoder) making 32 px images."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=2,
    )
    vae = AutoencoderKL(
        block_out_channels=[4, 8],
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        norm_num_groups=2,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
    )
    tokenizer = tiny_clip_tokenizer()
    text_encoder = CLIPTextModel(CLIPTextConfig(**tiny_clip_text_config(tokenizer)))
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipeline = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(directory, safe_serialization=True)
    return directory


def save_tiny_text_model(directory: Path) -> Path:
    """A random 2-layer, 32-d BERT with a character vocabulary, loadable by sentence-transformers (mean pooling)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    characters = sorted(set(string.ascii_lowercase + string.digits + string.punctuation))
    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *characters, *(f"##{c}" for c in characters)]
    (directory / "vocab.txt").write_text("\n".join(vocabulary) + "\n")
    BertTokenizerFast(vocab_file=str(directory / "vocab.txt"), do_lower_case=True).save_pretrained(directory)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocabulary), **TINY_TRANSFORMER, max_position_embeddings=128)).save_pretrained(
        directory
    )
    return directory
