"""Video: decoding, motion-magnitude adaptive sampling, frame packs, clip identity from keys,
and synthetic archives."""
