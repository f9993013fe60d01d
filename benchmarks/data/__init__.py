"""Training data and prompts: the degradation, clip reading, the tagger and the text encoder."""
