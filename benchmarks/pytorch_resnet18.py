"""PyTorch reference for `benchmarks/cpu_gap.py`: the same ResNet-18 CIFAR train step.

  python -m venv /tmp/torch && /tmp/torch/bin/pip install torch==2.13.0 numpy
  /tmp/torch/bin/python benchmarks/pytorch_resnet18.py --batch=128 --steps=3

PyTorch is not a dependency of east_jax: run this from its own virtual environment.
Eager mode, SGD-Nesterov with weight decay and gradient clipping as in our step,
synthetic 32x32x3 data, NCHW and channels-last memory formats, all CPU threads.
"""

import argparse
import time

import torch
from torch import nn
import torch.nn.functional as F


class BasicBlock(nn.Module):

  def __init__(self, cin, cout, stride):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(cout)
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(cout)
    self.shortcut = nn.Sequential()
    if stride != 1 or cin != cout:
      self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                    nn.BatchNorm2d(cout))

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ResNet18(nn.Module):

  def __init__(self, width=64, num_classes=10):
    super().__init__()
    self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                              nn.ReLU())
    blocks, cin = [], width
    for i in range(4):
      cout = width * 2**i
      blocks += [BasicBlock(cin, cout, 2 if i else 1), BasicBlock(cout, cout, 1)]
      cin = cout
    self.blocks = nn.Sequential(*blocks)
    self.classifier = nn.Linear(cin, num_classes, bias=False)

  def forward(self, x):
    return self.classifier(self.blocks(self.stem(x)).mean((2, 3)))


def measure(batch, steps, channels_last):
  torch.manual_seed(0)
  model = ResNet18()
  images = torch.randn(batch, 3, 32, 32)
  labels = torch.randint(0, 10, (batch,))
  if channels_last:
    model = model.to(memory_format=torch.channels_last)
    images = images.contiguous(memory_format=torch.channels_last)
  opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True,
                        weight_decay=1e-4)
  times = []
  for _ in range(steps + 1):  # The first step is a warm-up.
    start = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(images), labels)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    times.append(time.perf_counter() - start)
  return sorted(times[1:])[len(times[1:]) // 2]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--steps", type=int, default=3)
  args = parser.parse_args()
  print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
        f"median of {args.steps} steps after one warm-up")
  print("| memory format | step (s) | images/s |")
  print("|---|---|---|")
  for channels_last in (False, True):
    step = measure(args.batch, args.steps, channels_last)
    name = "channels-last (NHWC)" if channels_last else "contiguous (NCHW)"
    print(f"| {name} | {step:.3f} | {args.batch / step:.1f} |", flush=True)


if __name__ == "__main__":
  main()
