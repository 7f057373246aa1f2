"""ResNet-50 on ImageNet (ILSVRC-2012): EAST at 99.9%, standard recipe.

Inception crop 224 + flip; eval resize 256 / centre crop 224. Global batch 1024,
lr 0.4 (0.1 x 1024/256) after 5 warm-up epochs, x0.1 at 1/3, 2/3 and 8/9 of 90
epochs, weight decay 1e-4, Nesterov momentum. Validation = last 10% of train; the
"test" split is ImageNet's official validation set.

Prepare data (the ILSVRC2012 tars in <manual_dir>, tensorflow installed once):
  python -m east_jax.data.prepare imagenet2012 --manual_dir=<manual_dir>
EAST settings as on CIFAR with the phases scaled to the 90 epochs (fractions of
training): DyReLU phased out over 25-50%, 2 cycles of 20%, mask updates every 1000
steps inside them and every 4000 after. At 99.99% consider
sparsity.connect_all_classes=True (most of a 1000-class head is unconnected otherwise).
Launch (one host, all its accelerators):
  python -m east_jax.main --config=configs/imagenet_r50.py --workdir=runs/in_r50_east_999
  python -m east_jax.main --config=configs/imagenet_r50.py:method=dense --workdir=runs/in_r50
Expected: dense about 76% top-1 (literature value); the paper's ImageNet table was
not available to us (docs/method.md section 6). Not yet measured with east_jax.
Time: about 8 h on a TPU v4-32 or 8 x H100.
"""

from configs import default


def get_config(arg=None):
  config = default.get_config()
  config.model.name = "resnet50"
  config.model.stem = "imagenet"
  config.dataset.name = "imagenet2012"
  config.dataset.num_threads = 32
  config.batch_size = 1024
  config.eval_batch_size = 1024
  config.num_epochs = 90.0
  config.learning_rate = 0.4
  config.warmup_epochs = 5.0
  config.lr_decay_at = (1 / 3, 2 / 3, 8 / 9)
  config.grad_clip_norm = 0.0
  config.log_every_steps = 500
  config.checkpoint_every_steps = 5000
  config.sparsity.method = "east"
  config.sparsity.sparsity = 0.999
  return default.apply_arg(config, arg)
