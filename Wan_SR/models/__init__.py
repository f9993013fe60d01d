"""The networks and their files: the official Wan2.1-T2V-1.3B files loaded into diffsynth 1.1.8
classes with sizes read from the state dicts (:mod:`.wan`: ``resolve_wan_files``, ``load_dit``,
``load_vae``, ``vae_encode`` / ``vae_decode``), the base model's LoRA (:mod:`.lora`), the pruned
draft (:mod:`.draft`), one DiT forward for both (:mod:`.dit`), the streamed and fused VAE paths
(:mod:`.vae_stream`, :mod:`.vae_fast`), prompt embeddings with an on-disk cache (:mod:`.text`)
and the RAM/DAPE tagger that adds tags to the prompt (:mod:`.ram`, :mod:`.tagger`).
docs/method.md §3-§5 and §8 describe what each file holds."""
