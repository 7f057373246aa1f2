"""Data: offline tfds builders, the grain input pipeline, augmentation."""
