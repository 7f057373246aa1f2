"""Dynamic sparse training: masks, layer-wise distributions, drop/grow criteria,
schedules, the Optax transformation, the method registry and accounting."""
