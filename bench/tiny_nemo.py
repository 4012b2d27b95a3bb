"""Build a randomly initialised FastConformer-TDT .nemo so the real NeMo code path runs without a hub.

Same architecture family as Parakeet TDT 0.6B v3 (EncDecRNNTBPEModel, FastConformer encoder with
8x depthwise-striding subsampling, 128 mel features, TDT loss with durations [0..4]). TINY (the
tests' model) is shrunk to d_model 64 and 2 layers so it builds in seconds and saves to about
2 MB; PARAKEET_V3 has the full model's sizes (24 layers, d_model 1024, 8 heads, a 2-layer 640-wide
prediction network, an 8,192-piece vocabulary: about 0.6 B parameters), for measuring the
engine's speed and memory (bench/parakeet_size.py), since random weights cost the encoder the
same time as trained ones. Weights are random: tests assert shapes, keys and time bounds, never text.
"""

from __future__ import annotations

import os
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path

DURATIONS = [0, 1, 2, 3, 4]


@dataclass(frozen=True)
class TdtSize:
    """The sizes that set a FastConformer-TDT model's cost."""

    n_layers: int
    d_model: int
    n_heads: int
    ff_expansion_factor: int
    subsampling_conv_channels: int
    pred_hidden: int
    pred_rnn_layers: int
    joint_hidden: int
    vocab_size: int


TINY = TdtSize(2, 64, 2, 2, 32, 64, 1, 64, 64)
# Parakeet TDT 0.6B v3's published configuration (nvidia/parakeet-tdt-0.6b-v3, model_config.yaml).
PARAKEET_V3 = TdtSize(24, 1024, 8, 4, 256, 640, 2, 640, 8192)
VOCAB_SIZE = TINY.vocab_size

# Any English text with enough distinct characters for a 64-piece BPE vocabulary.
_TOKENIZER_TEXT = """\
and so my fellow americans ask not what your country can do for you ask what you can do for your country
the quick brown fox jumps over the lazy dog while five boxing wizards jump quickly
a backlog of recordings goes in and transcripts in object storage come out
we choose to go to the moon in this decade and do the other things not because they are easy
speech recognition turns sound into words with timestamps for every segment and word
""".splitlines()


def _pseudo_text(lines: int, seed: int = 0) -> list[str]:
    """Made-up words over a wide alphabet: enough distinct pairs for thousands of BPE merges."""
    rng = random.Random(seed)
    alphabet = "abcdefghijklmnopqrstuvwxyzäöüßéèàçñøåłśżčřž"
    return [
        " ".join("".join(rng.choice(alphabet) for _ in range(rng.randint(2, 9))) for _ in range(12))
        for _ in range(lines)
    ]


def _train_tokenizer(dest: Path, vocab_size: int = VOCAB_SIZE) -> Path:
    """Train a sentencepiece BPE model into dest/tokenizer.model (what NeMo's 'bpe' type reads)."""
    import sentencepiece as spm

    dest.mkdir(parents=True, exist_ok=True)
    corpus = dest / "text.txt"
    text = _TOKENIZER_TEXT * 4 if vocab_size <= VOCAB_SIZE else _TOKENIZER_TEXT + _pseudo_text(vocab_size * 4)
    corpus.write_text("\n".join(text) + "\n")
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(dest / "tokenizer"),
        vocab_size=vocab_size,
        model_type="bpe",
        character_coverage=1.0,
        bos_id=-1,
        eos_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    corpus.unlink()
    # NeMo registers vocab.txt as an artifact too: one piece per line, word-continuation pieces as ##piece.
    pieces = [line.split("\t", 1)[0] for line in (dest / "tokenizer.vocab").read_text().splitlines()]
    vocab = [piece[1:] if piece.startswith("\u2581") else f"##{piece}" for piece in pieces if piece]
    (dest / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return dest


def fastconformer_encoder(
    n_layers: int, d_model: int, n_heads: int, ff_expansion_factor: int, subsampling_conv_channels: int
) -> dict:
    """A FastConformer encoder's config (8x depthwise-striding subsampling, full attention), as
    Parakeet v3 and Sortformer v2 use it, at the given size; dropout off (the models are random)."""
    return {
        "_target_": "nemo.collections.asr.modules.ConformerEncoder",
        "feat_in": 128,
        "feat_out": -1,
        "n_layers": n_layers,
        "d_model": d_model,
        "subsampling": "dw_striding",
        "subsampling_factor": 8,
        "subsampling_conv_channels": subsampling_conv_channels,
        "causal_downsampling": False,
        "ff_expansion_factor": ff_expansion_factor,
        "self_attention_model": "rel_pos",
        "n_heads": n_heads,
        "att_context_size": [-1, -1],
        "xscaling": True,
        "untie_biases": True,
        "pos_emb_max_len": 5000,
        "conv_kernel_size": 9,
        "conv_norm_type": "batch_norm",
        "dropout": 0.0,
        "dropout_pre_encoder": 0.0,
        "dropout_emb": 0.0,
        "dropout_att": 0.0,
    }


def _model_config(tokenizer_dir: Path, size: TdtSize = TINY) -> dict:
    return {
        "sample_rate": 16000,
        "model_defaults": {
            "enc_hidden": size.d_model,
            "pred_hidden": size.pred_hidden,
            "joint_hidden": size.joint_hidden,
        },
        "tokenizer": {"dir": str(tokenizer_dir), "type": "bpe"},
        "preprocessor": {
            "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
            "sample_rate": 16000,
            "normalize": "per_feature",
            "window_size": 0.025,
            "window_stride": 0.01,
            "window": "hann",
            "features": 128,
            "n_fft": 512,
            "log": True,
            "frame_splicing": 1,
            "dither": 0.00001,
            "pad_to": 0,
            "pad_value": 0.0,
        },
        "encoder": fastconformer_encoder(
            size.n_layers,
            size.d_model,
            size.n_heads,
            size.ff_expansion_factor,
            size.subsampling_conv_channels,
        ),
        "decoder": {
            "_target_": "nemo.collections.asr.modules.RNNTDecoder",
            "normalization_mode": None,
            "random_state_sampling": False,
            "blank_as_pad": True,
            "vocab_size": size.vocab_size,
            "prednet": {
                "pred_hidden": size.pred_hidden,
                "pred_rnn_layers": size.pred_rnn_layers,
                "t_max": None,
                "dropout": 0.0,
            },
        },
        "joint": {
            "_target_": "nemo.collections.asr.modules.RNNTJoint",
            "log_softmax": None,
            "preserve_memory": False,
            "fuse_loss_wer": False,
            "num_classes": size.vocab_size,
            "num_extra_outputs": len(DURATIONS),
            "vocabulary": [],
            "jointnet": {
                "encoder_hidden": size.d_model,
                "pred_hidden": size.pred_hidden,
                "joint_hidden": size.joint_hidden,
                "activation": "relu",
                "dropout": 0.0,
            },
        },
        "decoding": {
            "strategy": "greedy_batch",
            "model_type": "tdt",
            "durations": DURATIONS,
            "greedy": {"max_symbols": 10},
        },
        "loss": {
            "loss_name": "tdt",
            "tdt_kwargs": {
                "fastemit_lambda": 0.0,
                "clamp": -1.0,
                "durations": DURATIONS,
                "sigma": 0.02,
                "omega": 0.1,
            },
        },
        "train_ds": None,
        "validation_ds": None,
        "test_ds": None,
        "optim": None,
    }


def build_tiny_tdt_nemo(dest: Path, seed: int = 0) -> Path:
    """Build the tiny FastConformer-TDT model and save it to dest (a .nemo path, or a folder for tiny-tdt.nemo)."""
    return build_tdt_nemo(dest, seed, TINY)


def build_tdt_nemo(dest: Path, seed: int = 0, size: TdtSize = TINY) -> Path:
    """Build a random FastConformer-TDT model of the given size and save it to dest (a .nemo path,
    or a folder for tiny-tdt.nemo)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from nemo.collections.asr.models import EncDecRNNTBPEModel
    from omegaconf import OmegaConf, open_dict

    dest = Path(dest)
    if dest.suffix != ".nemo":
        dest = dest / "tiny-tdt.nemo"
    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer_dir = _train_tokenizer(Path(scratch) / "tokenizer", size.vocab_size)
        model = EncDecRNNTBPEModel(cfg=OmegaConf.create(_model_config(tokenizer_dir, size)))
        # Like a trained checkpoint: validation_ds is a dict (NeMo's transcribe() reads it), set after
        # construction so the constructor does not try to build a validation data loader from it.
        cfg = model.cfg
        with open_dict(cfg):
            cfg.validation_ds = {
                "use_start_end_token": False,
                "sample_rate": 16000,
                "manifest_filepath": None,
            }
        model.cfg = cfg
        model.save_to(str(dest))
    return dest
