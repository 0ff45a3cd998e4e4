"""PyTorch modules for every model in models/: torchvision's structure and state_dict names where
torchvision defines the model (AlexNet, VGG-16, GoogLeNet without the auxiliary classifiers,
ResNet-18 / -50 v1.5), the C3D port's names for C3D, plain modules (conv1, fc1, lstm, ...) for
the others. tests/test_parity.py checks each against almc (names, shapes, outputs, gradients);
bench/ times almc against them. Imports only torch (the benchmark's PyTorch process loads
nothing else)."""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

F = torch.nn.functional


# ---- torchvision's models, written out (torchvision is not a dependency) ----------------------

class AlexNet(nn.Module):
    """torchvision.models.AlexNet; `pooled` is the AdaptiveAvgPool2d's output size (6 in torchvision),
    smaller in the reduced-size tests to keep the classifier small."""

    def __init__(self, classes=1000, pooled=6):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
        self.avgpool = nn.AdaptiveAvgPool2d((pooled, pooled))
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Linear(256 * pooled * pooled, 4096), nn.ReLU(inplace=True),
            nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Linear(4096, classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class VGG16(nn.Module):
    """torchvision.models.vgg16 (configuration "D", no batch norm); `pooled` as in AlexNet (7 here)."""

    def __init__(self, classes=1000, pooled=7):
        super().__init__()
        layers, cin = [], 3
        for v in [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
                cin = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((pooled, pooled))
        self.classifier = nn.Sequential(
            nn.Linear(512 * pooled * pooled, 4096), nn.ReLU(True), nn.Dropout(0.5),
            nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(0.5), nn.Linear(4096, classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class BasicConv2d(nn.Module):
    def __init__(self, cin, cout, **kw):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)), inplace=True)


class Inception(nn.Module):
    def __init__(self, cin, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj):
        super().__init__()
        self.branch1 = BasicConv2d(cin, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(BasicConv2d(cin, ch3x3red, kernel_size=1),
                                     BasicConv2d(ch3x3red, ch3x3, kernel_size=3, padding=1))
        # torchvision's "5x5" branch has a 3x3 kernel (pytorch/vision #906)
        self.branch3 = nn.Sequential(BasicConv2d(cin, ch5x5red, kernel_size=1),
                                     BasicConv2d(ch5x5red, ch5x5, kernel_size=3, padding=1))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
                                     BasicConv2d(cin, pool_proj, kernel_size=1))

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class GoogLeNet(nn.Module):
    """torchvision.models.GoogLeNet(aux_logits=False, transform_input=False)."""

    def __init__(self, classes=1000):
        super().__init__()
        self.conv1 = BasicConv2d(3, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, kernel_size=1)
        self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(1024, classes)

    def forward(self, x):
        x = self.maxpool2(self.conv3(self.conv2(self.maxpool1(self.conv1(x)))))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        for m in "abcde":
            x = getattr(self, f"inception4{m}")(x)
        x = self.inception5b(self.inception5a(self.maxpool4(x)))
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


def conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def conv1x1(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1, self.bn1 = conv3x3(cin, planes, stride), nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2, self.bn2 = conv3x3(planes, planes), nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        y = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    """torchvision's ResNet v1.5: the stride is on the 3x3 conv."""

    expansion = 4

    def __init__(self, cin, planes, stride=1, downsample=None, groups=1, base_width=64):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1, self.bn1 = conv1x1(cin, width), nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3, self.bn3 = conv1x1(width, planes * 4), nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    """torchvision.models.ResNet."""

    def __init__(self, block, depths, classes=1000, groups=1, width_per_group=64):
        super().__init__()
        self.inplanes = 64
        self.widths = {} if block is not Bottleneck else {"groups": groups, "base_width": width_per_group}
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        for i, (planes, n) in enumerate(zip([64, 128, 256, 512], depths), 1):
            setattr(self, f"layer{i}", self._make_layer(block, planes, n, 1 if i == 1 else 2))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, classes)

    def _make_layer(self, block, planes, blocks, stride):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample, **self.widths)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, **self.widths) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(classes=1000):
    return ResNet(BasicBlock, [2, 2, 2, 2], classes)


def resnet50(classes=1000):
    return ResNet(Bottleneck, [3, 4, 6, 3], classes)


class EncoderBlock(nn.Module):
    """torchvision's ViT EncoderBlock: pre-norm self-attention and MLP (Linear, GELU, Dropout,
    Linear, Dropout: mlp.0 and mlp.3), layer norm eps 1e-6."""

    def __init__(self, heads, dim, mlp, dropout=0.0):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=1e-6)
        self.self_attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.ln_2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp, dim),
                                 nn.Dropout(dropout))

    def forward(self, x):
        y = self.ln_1(x)
        x = x + self.dropout(self.self_attention(y, y, y, need_weights=False)[0])
        return x + self.mlp(self.ln_2(x))


class Encoder(nn.Module):
    def __init__(self, length, depth, heads, dim, mlp, dropout=0.0):
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.empty(1, length, dim))
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.Sequential(OrderedDict(
            (f"encoder_layer_{i}", EncoderBlock(heads, dim, mlp, dropout)) for i in range(depth)))
        self.ln = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x):
        return self.ln(self.layers(self.dropout(x + self.pos_embedding)))


class VisionTransformer(nn.Module):
    """torchvision.models.VisionTransformer (vit_b_16 at the defaults): conv_proj, class_token,
    encoder (pos_embedding, layers.encoder_layer_i, ln), heads.head."""

    def __init__(self, size=224, patch=16, depth=12, heads=12, dim=768, mlp=3072, classes=1000, channels=3):
        super().__init__()
        self.dim = dim
        self.conv_proj = nn.Conv2d(channels, dim, patch, stride=patch)
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.encoder = Encoder((size // patch) ** 2 + 1, depth, heads, dim, mlp)
        self.heads = nn.Sequential(OrderedDict(head=nn.Linear(dim, classes)))

    def forward(self, x):
        x = self.conv_proj(x).reshape(x.shape[0], self.dim, -1).permute(0, 2, 1)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.heads(self.encoder(x)[:, 0])


def vit_b_16(**kw):
    return VisionTransformer(**kw)


def vit_digits(classes=10):
    """models/vit_digits.alm: 16 x 16 grey images, 4 x 4 patches, two layers of width 64."""
    return VisionTransformer(size=16, patch=4, depth=2, heads=4, dim=64, mlp=128, classes=classes, channels=1)


class Conv2dNormActivation(nn.Sequential):
    """torchvision.ops.Conv2dNormActivation: bias-free conv ("same" padding), batch norm, SiLU."""

    def __init__(self, cin, cout, kernel=3, stride=1, groups=1, activation=True):
        layers = [nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                  nn.BatchNorm2d(cout)]
        super().__init__(*layers, *([nn.SiLU(inplace=True)] if activation else []))


class SqueezeExcitation(nn.Module):
    """torchvision.ops.SqueezeExcitation with SiLU inside: fc1, fc2 (1x1 convs with bias)."""

    def __init__(self, channels, squeeze):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(channels, squeeze, 1), nn.Conv2d(squeeze, channels, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.fc2(F.silu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))


class MBConv(nn.Module):
    """torchvision's MBConv (stochastic depth left out: it is the identity in eval mode)."""

    def __init__(self, expand, kernel, stride, cin, cout):
        super().__init__()
        self.residual = stride == 1 and cin == cout
        wide = cin * expand
        layers = [Conv2dNormActivation(cin, wide, 1)] if wide != cin else []
        layers += [Conv2dNormActivation(wide, wide, kernel, stride, groups=wide),
                   SqueezeExcitation(wide, max(1, cin // 4)), Conv2dNormActivation(wide, cout, 1, activation=False)]
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.block(x) if self.residual else self.block(x)


class EfficientNet(nn.Module):
    """torchvision.models.efficientnet_b0: features.0 (stem), features.1 .. 7 (the MBConv stages),
    features.8 (1x1 conv to 1280), avgpool, classifier (Dropout, Linear)."""

    STAGES = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
              (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1)]

    def __init__(self, classes=1000, dropout=0.2):
        super().__init__()
        layers = [Conv2dNormActivation(3, 32, 3, 2)]
        for expand, kernel, stride, cin, cout, n in self.STAGES:
            layers.append(nn.Sequential(*[MBConv(expand, kernel, stride if i == 0 else 1, cin if i == 0 else cout, cout)
                                          for i in range(n)]))
        layers.append(Conv2dNormActivation(320, 1280, 1))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(1280, classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def efficientnet_b0(classes=1000):
    return EfficientNet(classes)


# ---- the other models, as plain PyTorch modules ------------------------------------------------

def center_crop(x, like):
    """torchvision.transforms.functional.center_crop: start = round((in - out) / 2)."""
    h, w = like.shape[-2:]
    top, left = int(round((x.shape[-2] - h) / 2.0)), int(round((x.shape[-1] - w) / 2.0))
    return x[..., top:top + h, left:left + w]


class UNet(nn.Module):
    """Ronneberger, Fischer & Brox 2015, Fig. 1, as models/unet.alm: two valid 3x3 convs + ReLU per
    level, 2x2 max pools, 2x2 up-convolutions halving the channels, the skip connection
    centre-cropped and concatenated in front of the up-sampled map, a final 1x1 conv. Layers are
    attributes in forward order: conv1 .. conv19, upconv1 .. upconv4."""

    def __init__(self, channels=1, classes=2, widths=(64, 128, 256, 512)):
        super().__init__()
        self.widths, self.convs = list(widths), 0
        cin = channels
        for w in widths:
            cin = self._double(cin, w)
        cin = self._double(cin, widths[-1] * 2)
        for i, w in enumerate(reversed(widths), 1):
            setattr(self, f"upconv{i}", nn.ConvTranspose2d(cin, w, 2, stride=2))
            cin = self._double(2 * w, w)
        self._conv(cin, classes, 1)

    def _conv(self, cin, cout, k):
        self.convs += 1
        setattr(self, f"conv{self.convs}", nn.Conv2d(cin, cout, k))

    def _double(self, cin, cout):
        self._conv(cin, cout, 3)
        self._conv(cout, cout, 3)
        return cout

    def forward(self, x):
        k = iter(range(1, self.convs + 1))

        def double(x):
            x = F.relu(getattr(self, f"conv{next(k)}")(x))
            return F.relu(getattr(self, f"conv{next(k)}")(x))

        skips = []
        for _ in self.widths:
            x = double(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = double(x)
        for i, skip in enumerate(reversed(skips), 1):
            up = getattr(self, f"upconv{i}")(x)
            x = double(torch.cat([center_crop(skip, up), up], 1))
        return getattr(self, f"conv{next(k)}")(x)


class C3D(nn.Module):
    """Tran et al. 2015's Sports-1M C3D, as its common PyTorch port names it (conv1, conv2,
    conv3a .. conv5b, fc6 .. fc8; pool5 pads height and width by 1). Returns the logits (the port
    applies a softmax after fc8)."""

    def __init__(self, classes=487, features=8192):
        super().__init__()
        cin = 3
        for name, c in [("1", 64), ("2", 128), ("3a", 256), ("3b", 256), ("4a", 512), ("4b", 512),
                        ("5a", 512), ("5b", 512)]:
            setattr(self, f"conv{name}", nn.Conv3d(cin, c, 3, padding=1))
            cin = c
        self.pool1 = nn.MaxPool3d((1, 2, 2), (1, 2, 2))
        self.pool = nn.MaxPool3d(2, 2)
        self.pool5 = nn.MaxPool3d(2, 2, padding=(0, 1, 1))
        self.fc6, self.fc7, self.fc8 = nn.Linear(features, 4096), nn.Linear(4096, 4096), nn.Linear(4096, classes)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x):
        x = self.pool1(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        for s in "34":
            x = self.pool(F.relu(getattr(self, f"conv{s}b")(F.relu(getattr(self, f"conv{s}a")(x)))))
        x = self.pool5(F.relu(self.conv5b(F.relu(self.conv5a(x)))))
        x = self.dropout(F.relu(self.fc6(x.flatten(1))))
        x = self.dropout(F.relu(self.fc7(x)))
        return self.fc8(x)


class LeNet5(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 6, 5), nn.Conv2d(6, 16, 5)
        self.fc1, self.fc2, self.fc3 = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2).flatten(1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class MLP(nn.Module):
    def __init__(self, features=784, hidden=(256, 256), classes=10):
        super().__init__()
        sizes = [features, *hidden, classes]
        for i in range(len(sizes) - 1):
            setattr(self, f"fc{i + 1}", nn.Linear(sizes[i], sizes[i + 1]))
        self.n = len(sizes) - 1

    def forward(self, x):
        for i in range(1, self.n):
            x = F.relu(getattr(self, f"fc{i}")(x))
        return getattr(self, f"fc{self.n}")(x)


class Recurrent(nn.Module):
    """The RNN / LSTM / GRU classifiers: one stacked nn.RNN / nn.LSTM / nn.GRU and a Linear on
    the last step's hidden state."""

    def __init__(self, kind, features=28, hidden=128, layers=1, classes=10):
        super().__init__()
        self.kind = kind
        setattr(self, kind, getattr(nn, kind.upper())(features, hidden, num_layers=layers, batch_first=True))
        self.fc = nn.Linear(hidden, classes)

    def forward(self, x):
        seq, _ = getattr(self, self.kind)(x)
        return self.fc(seq[:, -1])


class Logistic(nn.Linear):
    """nn.Linear(features, 1) whose output is the logit; the probability is its sigmoid."""

    def forward(self, x):
        logit = super().forward(x)
        return {"logit": logit, "prob": torch.sigmoid(logit)}
