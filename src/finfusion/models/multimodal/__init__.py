"""Seed 000's multimodal diffusion forecaster, one component per file.

ts_encoder (PatchTST latents), text_encoder (MiniLM-L6 + LoRA), qformer (cross-modal fusion), moe (top-2 sparse MoE),
diffusion_decoder (the denoiser), diffusion (diffusers schedules and samplers), reconstruction and contrastive
(auxiliary losses), presets (sizes) and forecaster (the whole model, `MultimodalDiffusionForecaster`).
"""
