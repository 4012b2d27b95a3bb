"""Build a randomly initialised streaming Sortformer .nemo so the diarizer's real NeMo path runs without a hub.

The architecture of nvidia/diar_streaming_sortformer_4spk-v2 (SortformerEncLabelModel in streaming
mode: 128 mel features, a FastConformer encoder with 8x depthwise-striding subsampling, a
Transformer encoder, four speaker outputs), taken from NeMo's
examples/speaker_tasks/diarization/conf/neural_diarizer/streaming_sortformer_diarizer_4spk-v2.yaml
and shrunk (2 conformer layers of width 64, 1 transformer layer of width 32) so it builds in
well under a second and saves to about 1 MB. Weights are random: tests assert shapes, labels and
the path the audio takes, never who speaks when.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bench.tiny_nemo import fastconformer_encoder

MAX_SPEAKERS = 4


def _model_config() -> dict[str, Any]:
    fc_d_model, tf_d_model = 64, 32
    return {
        "sample_rate": 16000,
        "pil_weight": 0.5,
        "ats_weight": 0.5,
        "max_num_of_spks": MAX_SPEAKERS,
        "streaming_mode": True,
        "model_defaults": {"fc_d_model": fc_d_model, "tf_d_model": tf_d_model},
        "train_ds": None,
        "validation_ds": None,
        "test_ds": None,
        "preprocessor": {
            "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
            "normalize": "per_feature",
            "window_size": 0.025,
            "sample_rate": 16000,
            "window_stride": 0.01,
            "window": "hann",
            "features": 128,
            "n_fft": 512,
            "frame_splicing": 1,
            "dither": 0.00001,
        },
        # The published model's streaming defaults; the diarizer sets its own at load time.
        "sortformer_modules": {
            "_target_": "nemo.collections.asr.modules.sortformer_modules.SortformerModules",
            "num_spks": MAX_SPEAKERS,
            "dropout_rate": 0.5,
            "fc_d_model": fc_d_model,
            "tf_d_model": tf_d_model,
            "spkcache_len": 188,
            "fifo_len": 0,
            "chunk_len": 188,
            "spkcache_update_period": 188,
            "chunk_left_context": 1,
            "chunk_right_context": 1,
            "spkcache_sil_frames_per_spk": 3,
        },
        "encoder": fastconformer_encoder(
            n_layers=2, d_model=fc_d_model, n_heads=2, ff_expansion_factor=2, subsampling_conv_channels=32
        ),
        "transformer_encoder": {
            "_target_": "nemo.collections.asr.modules.transformer.transformer_encoders.TransformerEncoder",
            "num_layers": 1,
            "hidden_size": tf_d_model,
            "inner_size": 64,
            "num_attention_heads": 2,
            "attn_score_dropout": 0.0,
            "attn_layer_dropout": 0.0,
            "ffn_dropout": 0.0,
            "hidden_act": "relu",
            "pre_ln": False,
            "pre_ln_final_layer_norm": True,
        },
        "loss": {
            "_target_": "nemo.collections.asr.losses.bce_loss.BCELoss",
            "weight": None,
            "reduction": "mean",
        },
        "optim": None,
    }


def build_tiny_sortformer_nemo(dest: Path, seed: int = 0) -> Path:
    """Build the tiny streaming Sortformer and save it to dest (a .nemo path, or a folder for tiny-sortformer.nemo)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from nemo.collections.asr.models import SortformerEncLabelModel
    from omegaconf import OmegaConf

    dest = Path(dest)
    if dest.suffix != ".nemo":
        dest = dest / "tiny-sortformer.nemo"
    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = SortformerEncLabelModel(cfg=OmegaConf.create(_model_config()))
    model.save_to(str(dest))
    return dest
