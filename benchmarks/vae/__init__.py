"""The Wan VAE: speed of the fused and the reference paths, and the switches around them."""
