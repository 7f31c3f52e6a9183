"""Breadth over Hugging Face's architectures: language, vision and speech models as ``transformers`` builds them,
pruned by this project and by Torch-Pruning.

Each model is built from its config class with random weights (nothing downloaded), two layers deep where the
config allows it (the structure, not the size, is what is tried), in eval mode, and called as its users call
it: keyword arguments (``input_ids``; ``pixel_values``; ``input_values`` or ``input_features``; an
encoder-decoder's ``decoder_input_ids`` too), outputs Hugging Face's dataclasses, a causal language model's
key-value cache included. ``MODELS`` lists them: 14 text models (encoders, causal language models with tied
or separate heads, GPT-2's transposed ``Conv1D`` layers, rotary and ALiBi attention, T5 and BART), 16 vision
models and 4 speech and audio models.

The protocol is ``model_zoo``'s: analyse (the state and modes checked unchanged), remove a random 20% of every
channel group, compare with the original with those channels zeroed, count the parameters; Torch-Pruning 1.6
(``MetaPruner``, random importance, ratio 0.2, output layers protected, no model-specific settings) on the same
model. Each tool on each model in a process of its own, stopped after ``--limit`` seconds.

Run: ``python -m benchmarks.hf_zoo [--models ...] [--limit S]`` (the ``bench`` extra). Writes
``benchmarks/results/hf_zoo.csv`` and ``hf_zoo.md``.
"""

from __future__ import annotations

import torch
from torch import nn

from benchmarks import model_zoo

TWO = {"num_hidden_layers": 2}
SMALL = {"hidden_size": 256, "num_attention_heads": 8, "vocab_size": 1000}
SMALL_DECODER = SMALL | {"intermediate_size": 512}
SEQ2SEQ = {"vocab_size": 1000, "decoder_layers": 2}
# name: (model class, config class, config settings, input kind)
MODELS: dict[str, tuple[str, str, dict, str]] = {
    "distilbert": ("DistilBertForSequenceClassification", "DistilBertConfig", {"n_layers": 2}, "text"),
    "roberta": ("RobertaForSequenceClassification", "RobertaConfig", TWO, "text"),
    "albert": ("AlbertForSequenceClassification", "AlbertConfig", TWO, "text"),
    "electra": ("ElectraForSequenceClassification", "ElectraConfig", TWO, "text"),
    "gpt2": ("GPT2LMHeadModel", "GPT2Config", {"n_layer": 2}, "text"),
    "opt": ("OPTForCausalLM", "OPTConfig", TWO, "text"),
    "llama": ("LlamaForCausalLM", "LlamaConfig", TWO | SMALL_DECODER | {"num_key_value_heads": 4}, "text"),
    "mistral": ("MistralForCausalLM", "MistralConfig", TWO | SMALL_DECODER | {"num_key_value_heads": 4}, "text"),
    "qwen2": ("Qwen2ForCausalLM", "Qwen2Config", TWO | SMALL_DECODER | {"num_key_value_heads": 4}, "text"),
    "phi": ("PhiForCausalLM", "PhiConfig", TWO | SMALL_DECODER, "text"),
    "gpt_neox": ("GPTNeoXForCausalLM", "GPTNeoXConfig", TWO | SMALL_DECODER, "text"),
    "bloom": ("BloomForCausalLM", "BloomConfig", {"n_layer": 2, "n_head": 8} | SMALL, "text"),
    "falcon": ("FalconForCausalLM", "FalconConfig", TWO | SMALL, "text"),
    "t5": ("T5ForConditionalGeneration", "T5Config", {"num_layers": 2, "num_decoder_layers": 2}, "seq2seq"),
    "bart": ("BartForConditionalGeneration", "BartConfig", SEQ2SEQ | {"encoder_layers": 2}, "seq2seq"),
    "vit": ("ViTForImageClassification", "ViTConfig", TWO, "image"),
    "deit": ("DeiTForImageClassification", "DeiTConfig", TWO, "image"),
    "beit": ("BeitForImageClassification", "BeitConfig", TWO, "image"),
    "dinov2": ("Dinov2ForImageClassification", "Dinov2Config", TWO, "image"),
    "swin": ("SwinForImageClassification", "SwinConfig", {}, "image"),
    "convnext": ("ConvNextForImageClassification", "ConvNextConfig", {}, "image"),
    "convnextv2": ("ConvNextV2ForImageClassification", "ConvNextV2Config", {}, "image"),
    "resnet": ("ResNetForImageClassification", "ResNetConfig", {}, "image"),
    "regnet": ("RegNetForImageClassification", "RegNetConfig", {}, "image"),
    "mobilenet_v2": ("MobileNetV2ForImageClassification", "MobileNetV2Config", {}, "image"),
    "mobilevit": ("MobileViTForImageClassification", "MobileViTConfig", {}, "image"),
    "segformer": ("SegformerForSemanticSegmentation", "SegformerConfig", {}, "image"),
    "clip_vision": ("CLIPVisionModel", "CLIPVisionConfig", TWO, "image"),
    "levit": ("LevitForImageClassification", "LevitConfig", {}, "image"),
    "poolformer": ("PoolFormerForImageClassification", "PoolFormerConfig", {}, "image"),
    "yolos": ("YolosForObjectDetection", "YolosConfig", TWO, "image"),
    "wav2vec2": ("Wav2Vec2ForSequenceClassification", "Wav2Vec2Config", TWO, "waveform"),
    "hubert": ("HubertForSequenceClassification", "HubertConfig", TWO, "waveform"),
    "whisper": ("WhisperForConditionalGeneration", "WhisperConfig", {"encoder_layers": 2, "decoder_layers": 2}, "asr"),
    "ast": ("ASTForAudioClassification", "ASTConfig", TWO, "spectrogram"),
}  # fmt: skip


def build(name: str) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """The model (seeded random weights, eval mode) and its example as keyword arguments.

    >>> model, example = build("electra")
    >>> type(model).__name__, {key: tuple(value.shape) for key, value in example.items()}
    ('ElectraForSequenceClassification', {'input_ids': (2, 16)})
    """
    import transformers

    model_class, config_class, settings, kind = MODELS[name]
    config = getattr(transformers, config_class)(**settings)
    torch.manual_seed(0)
    model = getattr(transformers, model_class)(config).eval()
    tokens = torch.randint(5, 100, (2, 16))
    if kind == "text":
        return model, {"input_ids": tokens}
    if kind == "seq2seq":
        return model, {"input_ids": tokens, "decoder_input_ids": tokens[:, :8]}
    if kind == "image":
        size = config.image_size if isinstance(getattr(config, "image_size", None), int) else 224
        return model, {"pixel_values": torch.rand(2, 3, size, size)}
    if kind == "asr":
        return model, {"input_features": torch.randn(2, config.num_mel_bins, 3000), "decoder_input_ids": tokens[:, :8]}
    if kind == "spectrogram":
        return model, {"input_values": torch.randn(2, config.max_length, config.num_mel_bins)}
    return model, {"input_values": torch.randn(2, 16000)}


def one(name: str, tool: str) -> None:
    """Measure one model with one tool, in this process (``model_zoo.run_model`` starts it)."""
    model_zoo.measure_built(build, name, tool)


def main() -> None:
    def kinds(table):
        table.insert(1, "kind", [MODELS[name][3] for name in table["model"]])

    model_zoo.zoo_main(
        __doc__.splitlines()[0],
        "benchmarks.hf_zoo",
        list(MODELS),
        one,
        ("transformers", "torch", "torch_pruning"),
        "random weights, two layers where the config allows it",
        ("model", "kind", "params"),
        kinds,
    )


if __name__ == "__main__":
    main()
