"""Small networks covering every structure the channel analysis must handle.

Each builder returns ``(model, example_input)``; inputs are tensors or tuples of tensors.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn(cin: int, cout: int, k: int = 3, dims: int = 2, **kw) -> nn.Sequential:
    conv = nn.Conv2d if dims == 2 else nn.Conv1d
    bn = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
    return nn.Sequential(conv(cin, cout, k, padding=k // 2, bias=False, **kw), bn(cout), nn.ReLU())


class ReferenceCNN1d(nn.Module):
    """The reference example's kind: two Conv1d+BN+ReLU blocks, global pooling, a classifier."""

    def __init__(self, channels: int = 1, classes: int = 10, width: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(channels, width, 5, padding=2)
        self.bn1 = nn.BatchNorm1d(width)
        self.conv2 = nn.Conv1d(width, 2 * width, 5, padding=2)
        self.bn2 = nn.BatchNorm1d(2 * width)
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean(dim=-1))


class FlattenCNN(nn.Module):
    """Conv + GroupNorm + LayerNorm-free flatten into a Linear (channel c owns c*L .. c*L+L-1)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.gn = nn.GroupNorm(4, 8)
        self.conv2 = nn.Conv2d(8, 6, 3, stride=2, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.drop = nn.Dropout(0.1)
        self.fc = nn.Linear(6 * 2 * 2, 5)

    def forward(self, x):
        x = self.gn(self.conv1(x)).relu()
        x = self.pool(F.relu(self.conv2(x)))
        return self.fc(self.drop(x.view(x.size(0), -1)))


class LayerNormCNN(nn.Module):
    """LayerNorm over channels through permutes (ConvNeXt style), with a pointwise Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3, padding=1)
        self.norm = nn.LayerNorm(12)
        self.mlp = nn.Linear(12, 24)
        self.out = nn.Linear(24, 4)

    def forward(self, x):
        x = self.conv(x).permute(0, 2, 3, 1)
        x = F.gelu(self.mlp(self.norm(x)))
        return self.out(x.mean(dim=(1, 2)))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn(cin, cout, stride=stride), nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout)
        )
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.body(x)
        out += identity
        return F.relu(out)


class TinyResNet(nn.Module):
    """Residual additions, including a downsample branch, nested two levels deep."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 8)
        self.stage1 = nn.Sequential(BasicBlock(8, 8), BasicBlock(8, 8))
        self.stage2 = nn.Sequential(BasicBlock(8, 16, stride=2), BasicBlock(16, 16))
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        x = self.stage2(self.stage1(self.stem(x)))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class ConcatNet(nn.Module):
    """Concatenation along channels (offset mapping into the consumer), DenseNet/Inception style."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.b = nn.Conv2d(3, 6, 3, padding=1)
        self.c = nn.Conv2d(10, 5, 3, padding=1)
        self.d = nn.Conv2d(15, 7, 1)
        self.fc = nn.Linear(7, 2)

    def forward(self, x):
        ab = torch.cat([self.a(x), self.b(x)], dim=1)
        c = F.relu(self.c(ab))
        abc = torch.cat((ab, c), 1)
        return self.fc(F.relu(self.d(abc)).mean((2, 3)))


class DepthwiseGroupedNet(nn.Module):
    """Depthwise (multiplier 1 and 2) and grouped convolutions."""

    def __init__(self) -> None:
        super().__init__()
        self.expand = nn.Conv2d(3, 8, 1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.dw2 = nn.Conv2d(8, 16, 3, padding=1, groups=8)
        self.bn = nn.BatchNorm2d(16)
        self.grouped = nn.Conv2d(16, 12, 3, padding=1, groups=4)
        self.project = nn.Conv2d(12, 6, 1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        x = F.relu6(self.dw(self.expand(x)))
        x = F.relu(self.bn(self.dw2(x)))
        x = self.project(F.relu(self.grouped(x)))
        return self.fc(x.mean(dim=(-2, -1)))


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x):
        scale = F.adaptive_avg_pool2d(x, 1)
        scale = torch.sigmoid(self.fc2(F.relu(self.fc1(scale))))
        return x * scale


class SENet(nn.Module):
    """Channel-wise multiplication (squeeze-and-excitation) inside a nested block."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = conv_bn(3, 16)
        self.block = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16), SqueezeExcite(16, 4))
        self.project = nn.Conv2d(16, 8, 1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(self.project(self.block(self.conv(x))).flatten(2).mean(-1))


class Inner(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(6, 6, 3, padding=1)

    def forward(self, x):
        return torch.add(F.relu(self.conv(x)), x)


class Middle(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = Inner()
        self.extra = nn.ModuleDict({"gate": nn.Conv2d(6, 6, 1)})

    def forward(self, x):
        return self.inner(x) * torch.sigmoid(self.extra["gate"](x))


class NestedFunctional(nn.Module):
    """Deeply nested submodules and functional ops: F.relu, torch.add, view, flatten, mean."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.levels = nn.Sequential(nn.Sequential(Middle()), Middle())
        self.reduce = nn.Conv2d(6, 4, 1)
        self.fc = nn.Linear(4 * 16, 3)

    def forward(self, x):
        x = self.levels(F.relu(self.stem(x)))
        x = F.max_pool2d(self.reduce(x), 2)
        return self.fc(x.flatten(1))


class MultiInputOutput(nn.Module):
    """Two inputs, two outputs: the branches merge, and both heads are kept whole."""

    def __init__(self) -> None:
        super().__init__()
        self.image = conv_bn(3, 8)
        self.signal = conv_bn(2, 8, dims=1)
        self.mix = nn.Conv2d(8, 10, 3, padding=1)
        self.head_a = nn.Linear(10, 4)
        self.head_b = nn.Conv1d(8, 3, 1)

    def forward(self, image, signal):
        feats = self.mix(self.image(image))
        s = self.signal(signal)
        pooled = feats.mean(dim=(2, 3)) + s.mean(-1).sum(1, keepdim=True)
        return self.head_a(pooled), self.head_b(s)


class TransposeNet(nn.Module):
    """A small encoder-decoder with a transposed convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Conv2d(1, 8, 3, stride=2, padding=1)
        self.dec = nn.ConvTranspose2d(8, 6, 2, stride=2)
        self.out = nn.Conv2d(6, 1, 1)

    def forward(self, x):
        return self.out(F.relu(self.dec(F.relu(self.enc(x)))))


class ShuffleNet(nn.Module):
    """Channel split (chunk) and shuffle (view/transpose/view), ShuffleNet v2 style."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.branch = conv_bn(4, 4)
        self.tail = nn.Conv2d(8, 4, 1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x = self.stem(x)
        x1, x2 = x.chunk(2, dim=1)
        x = torch.cat((x1, self.branch(x2)), dim=1)
        n, c, h, w = x.size()
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, -1, h, w)
        return self.fc(self.tail(x).mean((2, 3)))


class BatchNormAct(nn.BatchNorm2d):
    """timm-style: a BatchNorm subclass whose forward calls F.batch_norm with its own tensors."""

    def forward(self, x):
        return F.relu(
            F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, self.training, self.momentum, self.eps
            )
        )


class GroupNormAct(nn.GroupNorm):
    def forward(self, x):
        return F.silu(F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps))


class AffineInstanceNorm(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.num_features = channels
        self.weight, self.bias = nn.Parameter(torch.rand(channels) + 0.5), nn.Parameter(torch.randn(channels))

    def forward(self, x):
        return F.instance_norm(x, None, None, self.weight, self.bias, True, 0.1, 1e-5)


class FunctionalNorms(nn.Module):
    """Batch, group and instance norms written with torch.nn.functional (timm's BatchNormAct2d, ...)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn = nn.Conv2d(3, 8, 3, padding=1), BatchNormAct(8)
        self.conv2, self.gn = nn.Conv2d(8, 8, 3, padding=1), GroupNormAct(4, 8)
        self.conv3, self.inorm = nn.Conv2d(8, 6, 3, padding=1), AffineInstanceNorm(6)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        x = self.gn(self.conv2(self.bn(self.conv1(x))))
        return self.fc(self.inorm(self.conv3(x)).relu().mean((2, 3)))


class SkipUpsample(nn.Module):
    """Encoder-decoder with a branch on shapes (not symbolically traceable)."""

    def __init__(self):
        super().__init__()
        self.skip = nn.Conv2d(3, 4, 3, padding=1)
        self.down = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.up = nn.ConvTranspose2d(8, 6, 2, stride=2)
        self.head = nn.Conv2d(10, 2, 1)

    def forward(self, x):
        skip = self.skip(x)
        y = self.up(self.down(x))
        if y.shape[-1] != skip.shape[-1]:
            y = F.interpolate(y, size=skip.shape[-2:])
        return self.head(torch.cat([y, skip], dim=1))


class SamePaddingConv2d(nn.Conv2d):
    """TensorFlow's "same" padding, as ported encoders do it: a padding module, then ``F.conv2d`` with the
    layer's own weight (``efficientnet_pytorch``'s ``Conv2dStaticSamePadding``; timm's ``Conv2dSame`` pads with
    ``F.pad``)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(cin, cout, k, stride=stride, groups=groups)
        total = max(k - stride, 0)
        self.static_padding = nn.ZeroPad2d((total // 2, total - total // 2, total // 2, total - total // 2))

    def forward(self, x):
        x = self.static_padding(x)
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class SamePaddingNet(nn.Module):
    """Padding modules (zero and reflection) and "same"-padding convolutions, depthwise and pointwise."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(SamePaddingConv2d(3, 8, 3, stride=2), nn.BatchNorm2d(8), nn.ReLU())
        self.reflect = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(8, 12, 3), nn.ReLU())
        self.depthwise = SamePaddingConv2d(12, 12, 3, groups=12)
        self.pointwise = SamePaddingConv2d(12, 6, 1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        x = self.pointwise(self.depthwise(self.reflect(self.stem(x))).relu())
        return self.fc(x.mean((2, 3)))


ARCHITECTURES = {
    "reference_cnn1d": lambda: (ReferenceCNN1d(), torch.randn(4, 1, 40)),
    "flatten_groupnorm": lambda: (FlattenCNN(), torch.randn(2, 3, 8, 8)),
    "residual": lambda: (TinyResNet(), torch.randn(2, 3, 16, 16)),
    "concat": lambda: (ConcatNet(), torch.randn(2, 3, 8, 8)),
    "depthwise_grouped": lambda: (DepthwiseGroupedNet(), torch.randn(2, 3, 8, 8)),
    "squeeze_excitation": lambda: (SENet(), torch.randn(2, 3, 8, 8)),
    "nested_functional": lambda: (NestedFunctional(), torch.randn(2, 3, 8, 8)),
    "multi_input_output": lambda: (MultiInputOutput(), (torch.randn(2, 3, 8, 8), torch.randn(2, 2, 12))),
    "conv_transpose": lambda: (TransposeNet(), torch.randn(2, 1, 8, 8)),
    "shuffle": lambda: (ShuffleNet(), torch.randn(2, 3, 8, 8)),
    "layernorm_channels": lambda: (LayerNormCNN(), torch.randn(2, 3, 6, 6)),
    "functional_norms": lambda: (FunctionalNorms(), torch.randn(2, 3, 8, 8)),
    "shape_branch": lambda: (SkipUpsample(), torch.randn(2, 3, 9, 9)),
    "same_padding": lambda: (SamePaddingNet(), torch.randn(2, 3, 12, 12)),
}


def wave_task(n: int = 256, seed: int = 0):
    """A small learnable sequence task: which of 4 frequencies a noisy sine wave has."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=gen)
    phase = 2 * math.pi * torch.rand(n, 1, generator=gen)
    t = torch.arange(24.0)
    x = torch.sin(2 * math.pi * (y[:, None] + 1) * t / 24 + phase) + 0.3 * torch.randn(n, 24, generator=gen)
    return x.unsqueeze(1), y


def wave_cnn(width: int = 8) -> nn.Module:
    """A two-layer 1-D CNN with batch norms for ``wave_task`` (seeded: the same network every call)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv1d(1, width, 3, padding=1),
        nn.BatchNorm1d(width),
        nn.ReLU(),
        nn.Conv1d(width, 2 * width, 3, padding=1),
        nn.BatchNorm1d(2 * width),
        nn.ReLU(),
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(2 * width, 4),
    )
